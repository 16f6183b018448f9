"""`serve --workers N` at startup: a bad setting stops the server with one error, as with one
worker (uvicorn restarts a worker that exits otherwise, forever), and every worker builds its
app from the params the parent validated, not from the params file read again."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from mnist_pipeline.core.errors import PipelineError
from mnist_pipeline.core.params import Params, load_params, parse_params
from mnist_pipeline.serving import server
from tests.process_helpers import free_port, start, stop

pytestmark = pytest.mark.slow


def _project(tmp_path: Path, serve: dict[str, object]) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"serve": serve}))
    return tmp_path


def test_a_missing_tokens_file_stops_several_workers_with_one_error(tmp_path: Path) -> None:
    from tests.conftest import REPO_ROOT

    root = _project(tmp_path, {"feedback_tokens_file": "missing-tokens.txt"})
    args = [sys.executable, "-m", "mnist_pipeline", "--root", str(root), "serve"]
    args += ["--port", str(free_port()), "--workers", "2"]
    log = tmp_path / "serve.log"
    proc = start(args, {**os.environ, "PYTHONPATH": str(REPO_ROOT)}, log, REPO_ROOT)
    try:
        code = proc.wait(timeout=60)  # before: workers restarted every half second, forever
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve kept running:\n{log.read_text()[-2000:]}")
    finally:
        stop(proc)
    output = log.read_text()
    assert code != 0
    assert output.count("missing-tokens.txt does not exist") == 1, output
    assert "died" not in output and "Traceback" not in output


def test_a_worker_that_cannot_start_exits_as_a_startup_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn's supervisor stops instead of restarting a worker whose exit code is 3."""
    params = parse_params({"serve": {"feedback_tokens_file": str(tmp_path / "gone.txt")}})
    monkeypatch.setenv(server.ENV_PARAMS, params.model_dump_json())
    monkeypatch.setenv(server.ENV_ROOT, str(tmp_path))
    monkeypatch.setenv(server.ENV_STARTED, str(time.time()))
    with (
        caplog.at_level(logging.ERROR, logger="mnist_pipeline.serve"),
        pytest.raises(SystemExit) as stopped,
    ):
        server.app_from_env()
    assert stopped.value.code == 3
    assert "could not start: feedback tokens file" in caplog.text and "gone.txt" in caplog.text
    # in place of a worker that died an hour into serving: started again, the others serve on
    monkeypatch.setenv(server.ENV_STARTED, str(time.time() - 3600))
    with pytest.raises(SystemExit) as restarted:
        server.app_from_env()
    assert restarted.value.code == 1


def test_a_real_supervisor_stops_when_its_workers_cannot_start(tmp_path: Path) -> None:
    """Past the parent's own checks (skipped here), the workers uvicorn spawns fail to build
    the app: uvicorn's supervisor stops them all, and `serve` fails, instead of restarting
    them twice a second forever."""
    from tests.conftest import REPO_ROOT

    root = _project(tmp_path, {"feedback_tokens_file": "missing-tokens.txt", "workers": 2})
    script = (
        "import sys; from pathlib import Path; from mnist_pipeline.serving import server\n"
        "server.feedback_of = lambda *a, **k: None  # the parent's check only\n"
        "from mnist_pipeline.core.errors import one_line_errors\n"
        "with one_line_errors():\n"
        f"    server.run(Path({str(root / 'params.yaml')!r}), Path({str(root)!r}),"
        f" {{'serve.port': {free_port()}, 'serve.host': '127.0.0.1'}})\n"
    )
    log = tmp_path / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = start([sys.executable, "-c", script], env, log, REPO_ROOT)
    try:
        code = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve kept restarting its workers:\n{log.read_text()[-2000:]}")
    finally:
        stop(proc)
    output = log.read_text()
    assert code == 1, output
    assert "could not start: feedback tokens file" in output and "missing-tokens.txt" in output
    assert "error: serve: a worker could not start" in output
    assert output.count("could not start: feedback tokens file") <= 2  # one try per worker


def test_workers_get_the_validated_params_and_a_startup_failure_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the workers build from is fixed when the server starts: an edit of params.yaml
    made afterwards reaches no worker uvicorn starts later."""
    root = _project(tmp_path, {"reload_interval_s": 7.0})
    params = load_params(root / "params.yaml", {"serve.model": "staging", "serve.workers": 2})
    exits: list[int | None] = [None, None]
    given: list[str] = []
    built: list[tuple[Params, Path]] = []

    class Supervisor:
        def __init__(self, config: object, sockets: list, **_: object) -> None:
            self.processes = [SimpleNamespace(exitcode=code) for code in exits]

        def run(self) -> None:
            given.append(server.os.environ[server.ENV_PARAMS])
            (root / "params.yaml").write_text(yaml.safe_dump({"serve": {"model": "v9"}}))
            server.app_from_env()  # as a worker uvicorn starts after the edit

    def build(params: Params, layout: server.Layout, shared: object) -> object:
        built.append((params, layout.root))
        return object()

    monkeypatch.setattr(server, "build", build)
    monkeypatch.setattr(server, "Multiprocess", Supervisor)
    monkeypatch.setattr(server, "Supervisor", Supervisor)
    monkeypatch.setenv(server.ENV_PARAMS, "")  # restored afterwards
    monkeypatch.setenv(server.ENV_ROOT, "")
    server._run_workers(root, params, [])
    (seen,) = given
    assert parse_params(json.loads(seen)) == params
    assert built == [(params, root)] and built[0][0].serve.model == "staging"
    assert (params.serve.model, params.serve.reload_interval_s) == ("staging", 7.0)
    exits[1] = 3  # uvicorn's STARTUP_FAILURE: the supervisor stopped
    with pytest.raises(PipelineError, match="a worker could not start"):
        server._run_workers(root, params, [])


def test_a_registry_root_that_is_a_file_stops_serve_and_a_model_typo_is_warned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A root that is a file was read as an empty registry: the server ran, answering 503
    'versions: none registered' for ever. A model name the registry folder does not hold,
    beside others, may be one not registered yet: served once it is, and warned of now."""
    from mnist_pipeline.core.errors import RegistryError

    root = _project(tmp_path, {})
    params = yaml.safe_load((root / "params.yaml").read_text())
    (root / "params.yaml").write_text(
        yaml.safe_dump({**params, "registry": {"root": "params.yaml"}})
    )
    with pytest.raises(RegistryError, match=r"params.yaml \(registry.root 'params.yaml'\) is a fi"):
        server.run(root / "params.yaml", root, {"serve.port": free_port()})
    (root / "registry" / "mnist-cnn").mkdir(parents=True)
    typo = {**params, "registry": {"model_name": "mnist-cnm"}}
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
        server.check_registry(parse_params(typo), server.Layout(root))
    assert (
        f"no model 'mnist-cnm' in the registry at {root / 'registry'} (registry.model_name) yet; "
        "models there: mnist-cnn: serving nothing until one of it is registered"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.serve"):
        server.check_registry(parse_params(params), server.Layout(root))
    assert caplog.text == ""
