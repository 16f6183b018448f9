"""`mnist-pipeline serve`: the registry's production model over HTTP (uvicorn + http_api.py).

One process (`serve.workers` 1) serves the app object directly; with more workers uvicorn
imports `app_from_env` in each worker process, which builds the app from the params the parent
validated and the root (passed in MNIST_SERVE_* variables; a worker restarted later does not
read an edited params file). What can fail at startup (the registry's location and keys, the
feedback tokens) is checked in the parent first, so a bad setting is one error line and a
non-zero exit as with one worker; a worker that still cannot start as the server starts stops
it (uvicorn's STARTUP_FAILURE) instead of being restarted forever. Each process follows the
alias on its own: it polls the registry and, with a Prefect API configured, also hears the
alias's events (alias_events.py). With `serve.metrics` the workers count in a fresh
PROMETHEUS_MULTIPROC_DIR (metrics.py), so GET /metrics answered by any of them adds up all of
them; a canary one of them steps back is stepped back by all (canary_shared.py, in a folder of
the server's run).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.layout import Layout
from mnist_pipeline.core.params import Params, load_params, parse_params
from mnist_pipeline.core.service_params import ServeParams
from mnist_pipeline.pipeline.versions import check_not_a_file, models_in, open_registry
from mnist_pipeline.serving.alias_events import api_configured, preload_prefect
from mnist_pipeline.serving.canary_shared import SharedStepBacks, run_folder
from mnist_pipeline.serving.challenger import Challenger
from mnist_pipeline.serving.drift_claim import DriftClaims, claim_file
from mnist_pipeline.serving.feedback import Feedback
from mnist_pipeline.serving.http_api import create_app
from mnist_pipeline.serving.metrics import ENV_MULTIPROC, Supervisor, multiprocess_dir
from mnist_pipeline.serving.served_model import ServedModel
from mnist_pipeline.serving.tokens import Credentials, RateLimiter

ENV_ROOT, ENV_PARAMS = "MNIST_SERVE_ROOT", "MNIST_SERVE_PARAMS"  # the params as validated JSON
ENV_STARTED = "MNIST_SERVE_STARTED"  # time.time() when `serve` started its workers
STARTING_S = 60.0  # a worker that cannot start this soon after stops the server
logger = logging.getLogger("mnist_pipeline.serve")


def build(params: Params, layout: Layout, shared: SharedStepBacks | None = None) -> FastAPI:
    """The app, its model loaded once now (if it can be) and followed from then on; `shared`:
    the canary step backs of the server's other workers."""
    registry = open_registry(params.registry, layout)
    served = ServedModel(registry, params.serve.model)
    challenger = None
    if params.serve.shadow is not None:
        challenger = Challenger(registry, params.serve, shared=shared)
    feedback = feedback_of(params.serve, layout, params.inbox.shared)
    claims = DriftClaims(  # one drift event per cooldown for every worker and restart
        claim_file(layout.project, params.registry.model_name), params.serve.drift_cooldown_s
    )
    app = create_app(served, params.serve, feedback, challenger, claims)  # metrics listen
    if api_configured():
        preload_prefect()  # before the threads that send and hear events start
    served.refresh()  # a failure is logged; /readyz says 503 until a version loads
    served.follow(params.serve.reload_interval_s)
    if params.serve.follow_events:
        served.follow_events()  # only with a Prefect API configured
    if challenger is not None:
        challenger.start(params.serve.reload_interval_s, params.serve.follow_events)
    return app


def feedback_of(serve: ServeParams, layout: Layout, shared: str | None = None) -> Feedback | None:
    """/feedback's settings when credentials are configured (None: no /feedback); with a shared
    inbox (`inbox.shared`) its claims go to the store's review queue."""
    credentials = Credentials.from_settings(serve.feedback_tokens_file, layout.project, os.environ)
    if credentials is None:
        return None
    limiter = RateLimiter(serve.feedback_rate_per_minute)
    store = None if shared is None else str(layout.shared_inbox(shared))
    return Feedback(
        layout.inbox,
        layout.pending,
        credentials,
        limiter,
        serve.feedback_quota,
        store,
        max_pixels=serve.max_pixels,
    )


def _log_to_stderr() -> None:
    """The server's own lines (`mnist_pipeline.serve`), INFO and up, in one format: in the
    parent and in every worker process, which uvicorn starts with its own loggers only."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(name)s: %(message)s")


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process (serve.workers > 1). A worker that cannot
    start while the server starts (within STARTING_S) exits with STARTUP_FAILURE, which stops
    uvicorn's supervisor; one started later, in place of a worker that died, exits 1 and is
    started again, so that one bad moment (a file being rewritten) does not stop them all."""
    _log_to_stderr()
    try:
        params = parse_params(json.loads(os.environ[ENV_PARAMS]), "the server's params")
        return build(params, Layout(Path(os.environ[ENV_ROOT])), SharedStepBacks.from_env())
    except Exception as exc:  # noqa: BLE001 - uvicorn would restart it forever
        if isinstance(exc, PipelineError):
            logger.error("worker %d could not start: %s", os.getpid(), exc)
        else:
            logger.exception("worker %d could not start", os.getpid())
        starting = time.time() - float(os.environ.get(ENV_STARTED, "0")) < STARTING_S
        sys.exit(STARTUP_FAILURE if starting else 1)


def run(params_path: Path, root: Path, overrides: dict[str, object]) -> None:
    """Serve until interrupted, with `overrides` (serve.host, .port, .model, .workers)."""
    params = load_params(params_path, overrides)
    _log_to_stderr()
    check_registry(params, Layout(root))
    serve = params.serve
    sockets = listening_sockets(serve.host, serve.port)  # one taken: refused before the model
    try:
        if serve.workers == 1:
            # With PROMETHEUS_MULTIPROC_DIR inherited, prometheus-client counts in files there,
            # beside any other process's: a fresh folder of its own keeps the numbers its own.
            inherited = serve.metrics and ENV_MULTIPROC in os.environ
            with multiprocess_dir() if inherited else nullcontext():
                app = build(params, Layout(root))
                config = uvicorn.Config(app, log_level="warning", proxy_headers=False)
                with _sigterm_stops_cleanly():
                    uvicorn.Server(config).run(sockets=sockets)
        else:
            _run_workers(root, params, sockets)
    finally:
        for sock in sockets:
            sock.close()


def check_registry(params: Params, layout: Layout) -> None:
    """Refuse a registry.root that is a file (RegistryError); warn of a registry folder that
    holds other models but not registry.model_name's (a typo, or one not registered yet). A
    registry that does not exist yet is waited for, as a version that is not registered yet."""
    root = layout.registry_root(params.registry.root)
    if not isinstance(root, Path):
        return
    check_not_a_file(root, params.registry.root)
    name, models = params.registry.model_name, models_in(root)
    if models and name not in models:
        logger.warning(
            "no model %r in the registry at %s (registry.model_name) yet; models there: %s: "
            "serving nothing until one of it is registered",
            name,
            root,
            ", ".join(sorted(models)),
        )


@contextmanager
def _sigterm_stops_cleanly() -> Iterator[None]:
    """SIGTERM is how a supervisor (systemd, Kubernetes) stops a server: uvicorn shuts down
    gracefully, then raises the signal again for the handler it found, which here does nothing,
    so one worker ends with status 0 as several do (the CLI's own handler would make it 143)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: nothing to change
        return
    before = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _run_workers(root: Path, params: Params, sockets: list[socket.socket]) -> None:
    """serve.workers processes, each building the app from the environment (app_from_env)."""
    serve, layout = params.serve, Layout(root)
    open_registry(params.registry, layout)  # a bad location or key file: refused here, once
    feedback_of(serve, layout, params.inbox.shared)  # and the feedback tokens
    os.environ[ENV_PARAMS], os.environ[ENV_ROOT] = params.model_dump_json(), str(root.resolve())
    os.environ[ENV_STARTED] = str(time.time())
    config = uvicorn.Config(
        f"{__name__}:app_from_env",
        factory=True,
        host=serve.host,
        port=serve.port,
        workers=serve.workers,
        log_level="warning",
        proxy_headers=False,  # the client is the TCP peer: X-Forwarded-For is anyone's to send
    )
    with run_folder(), multiprocess_dir() if serve.metrics else nullcontext() as folder:
        if folder is None:
            supervisor = Multiprocess(config, sockets=sockets)
        else:
            supervisor = Supervisor(config, sockets=sockets, folder=folder)
        supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise PipelineError("serve: a worker could not start (its error is above); stopped")


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """A bound socket for every address `host` names (`localhost`: 127.0.0.1 and ::1, as
    asyncio would listen on); OSError naming the host or the address that cannot be bound."""
    try:
        found = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:  # said before anything else says "[Errno -2]" alone
        raise OSError(exc.errno, f"cannot listen on {host}: {exc.strerror}") from None
    addresses = list(dict.fromkeys((family, address[:2]) for family, *_, address in found))
    sockets: list[socket.socket] = []
    try:
        for family, (address, _) in addresses:
            sockets.append(tcp_socket(address, port, family, v6_only=len(addresses) > 1))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def tcp_socket(
    host: str, port: int, family: int | None = None, v6_only: bool = False
) -> socket.socket:
    """The listening socket (of every worker), created with protocol TCP so that asyncio sets
    TCP_NODELAY on every connection. (uvicorn's own socket has protocol 0, which asyncio skips:
    on keep-alive connections Nagle's algorithm and delayed ACKs then add ~40 ms to every
    response, measured with benchmarks/bench_serve.py.)"""
    if family is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and v6_only:  # ::1 beside 127.0.0.1, as asyncio binds them
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # say which address, as uvicorn does with one worker
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
