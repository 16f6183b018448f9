"""A real `prefect server start` on 127.0.0.1 for the benchmarks, and the CPU they ran on."""

from __future__ import annotations

import os
import platform
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from tests.process_helpers import free_port, start, stop

BIN = Path(sys.executable).parent


@dataclass
class Server:
    """A started server: the environment its clients use, and how to stop it."""

    env: dict[str, str]
    process: Popen

    def stop(self) -> None:
        stop(self.process)


def running_server(scratch: Path, env: dict[str, str], timeout: float = 180) -> Server:
    """Start a server with its own PREFECT_HOME under `scratch`; wait until it answers."""
    port = free_port()
    env = {
        **env,
        "PREFECT_HOME": str(scratch / "home-server"),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    log = scratch / "server.log"
    server = Server(env, start(args, env, log, scratch))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                return server
        except OSError:
            if server.process.poll() is not None:
                break
            time.sleep(0.5)
    server.stop()
    sys.exit(f"prefect server did not start:\n{log.read_text()[-3000:]}")


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux) and the number of cores."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x {os.cpu_count()}"
