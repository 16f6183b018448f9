"""The hosts of tests/test_multi_host.py: running commands on them, their servers, the
repository they clone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT
from tests.netns_helpers import Host
from tests.process_helpers import start, stop, wait_for
from tests.test_scale_out import as_postgres, postgres_bin


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def base_env(home: Path) -> dict[str, str]:
    """The machine's environment without anything pointing elsewhere, plus a Prefect home."""
    dropped = ("MNIST_MIRROR", "PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "AWS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    home.mkdir(parents=True, exist_ok=True)
    return {
        **env,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def reachable(host: Host, url: str) -> bool:
    probe = f"import urllib.request as u; u.urlopen({url!r}, timeout=3)"
    return (
        subprocess.run(host.run([sys.executable, "-c", probe]), capture_output=True).returncode == 0
    )


def on_host(host: Host, args: list[str], env: dict[str, str], cwd: Path = REPO_ROOT) -> str:
    """Run `args` on `host` to the end; its stdout (the test fails on a non-zero exit)."""
    done = subprocess.run(
        host.run(args), env=env, cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def client(host: Host, env: dict[str, str], *args: str) -> object:
    """`python -m tests.multi_host_client ARGS` on the client host; its JSON output."""
    out = on_host(host, [sys.executable, "-m", "tests.multi_host_client", *args], env)
    return json.loads(out.strip().splitlines()[-1])


def launch(
    procs: ExitStack,
    host: Host,
    args: list[str],
    env,
    log: Path,
    cwd: Path,
    probe: str,
    observer: Host,
) -> None:
    """Start `args` on `host` (stopped when `procs` closes); return once `probe` answers
    `observer`."""
    proc = start(host.run(args), env, log, cwd)
    procs.callback(stop, proc)
    wait_for(lambda: reachable(observer, probe), 180, args[0], proc, log)


@dataclass
class Postgres:
    """A throwaway cluster on the db host's own 127.0.0.1 (`url`: its asyncpg URL there)."""

    host: Host
    folder: Path
    url: str = "postgresql+asyncpg://prefect@127.0.0.1:5432/prefect"
    proc: subprocess.Popen | None = None

    def command(self, name: str, *args: str) -> list[str]:
        """PostgreSQL's program `name` run on the db host as the postgres user."""
        return self.host.run(as_postgres([str(postgres_bin() / name), *args]))

    def start(self) -> None:
        """Run the server on the cluster's data directory; return once it accepts connections."""
        log, data = self.folder / "postgres.log", str(self.folder / "data")
        server = self.command(
            *("postgres", "-D", data, "-p", "5432", "-k", str(self.folder)),
            *("-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"),
        )
        with open(log, "ab") as out:  # a restarted server's log keeps what came before
            self.proc = subprocess.Popen(
                server, cwd=self.folder, stdout=out, stderr=out, start_new_session=True
            )
        ready = self.command("pg_isready", "-h", "127.0.0.1", "-p", "5432")
        wait_for(lambda: subprocess.run(ready).returncode == 0, 60, "postgres", self.proc, log)

    def restart(self) -> float:
        """Stop the server as `systemctl restart` does (fast: open sessions are ended) and start
        it again on the same data directory. Returns when it had stopped (time.time())."""
        pg_ctl = self.command("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "stop")
        done = subprocess.run(pg_ctl, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        self.proc.wait(timeout=60)
        stopped = time.time()
        self.start()
        return stopped


def start_postgres(procs: ExitStack, db: Host) -> Postgres:
    """A fresh cluster on the db host, stopped (and removed) when `procs` closes."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-multihost-pg-"))
    procs.callback(shutil.rmtree, folder, ignore_errors=True)
    shutil.chown(folder, "postgres")
    initdb = [str(postgres_bin() / "initdb"), "-D", str(folder / "data"), "-U", "prefect"]
    done = subprocess.run(
        as_postgres([*initdb, "--auth=trust"]), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    postgres = Postgres(db, folder)
    postgres.start()
    procs.callback(lambda: stop(postgres.proc))
    create = postgres.command("createdb", "-h", "127.0.0.1", "-p", "5432", "-U", "prefect")
    assert subprocess.run([*create, "prefect"], capture_output=True, timeout=60).returncode == 0
    return postgres


def shared_inbox(registry: str) -> str:
    """The labelled digits' store beside the registry: s3://BUCKET/inbox."""
    return registry.rsplit("/", 1)[0] + "/inbox"


def publish_repository(folder: Path, mirror: str, registry: str) -> Path:
    """A bare repository holding this checkout's HEAD plus a commit adding hosts.yaml (the
    params these hosts run with: the registry and the inbox in the bucket; and a deployment
    limit of 3); returns the folder git daemon serves."""
    served = folder / "served"
    bare = served / "mnist-pipeline.git"
    git("init", "--bare", "-q", "-b", "main", str(bare), cwd=folder)
    head = git("rev-parse", "HEAD", cwd=REPO_ROOT)
    git("push", "-q", str(bare), f"{head}:refs/heads/main", cwd=REPO_ROOT)
    author = folder / "author"
    git("clone", "-q", str(bare), str(author), cwd=folder)
    params = {
        "data": {"mirrors": [mirror]},
        "train": {"max_batches_per_epoch": 30, "val_size": 1000, "num_threads": 1},
        "evaluate": {"min_accuracy": 0.0, "robustness_per_transform": 0},
        "registry": {"root": registry},
        "inbox": {"shared": shared_inbox(registry)},
    }
    (author / "hosts.yaml").write_text(yaml.safe_dump(params))
    # runs may overlap here (the deployment's default limit, 1, queues them one at a time):
    # in prefect.yaml and in params.yaml, which `prefect deploy` checks it against
    spec = yaml.safe_load((author / "prefect.yaml").read_text())
    spec["deployments"][0]["concurrency_limit"]["limit"] = 3
    (author / "prefect.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    project = (author / "params.yaml").read_text()
    schedule = "schedule:\n"
    assert project.count(schedule) == 1
    (author / "params.yaml").write_text(
        project.replace(schedule, schedule + "  concurrency_limit: 3\n")
    )
    git("add", "hosts.yaml", "prefect.yaml", "params.yaml", cwd=author)
    git(
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.invalid",
        "commit",
        "-q",
        "-m",
        "params for the multi-host test",
        cwd=author,
    )
    git("push", "-q", "origin", "main", cwd=author)
    return served
