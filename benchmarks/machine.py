"""The CPU a benchmark ran on (machines differ between sessions: every figure names its CPU)."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path


def cpu_name() -> str:
    """The CPU model (from /proc/cpuinfo on Linux) and the number of cores."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} x {os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x {os.cpu_count()}"


def lscpu_model() -> str:
    """lscpu's "Model name" (the machine's CPU), or /proc/cpuinfo's where lscpu is missing."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return cpu_name()
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return f"{names[0]} x {os.cpu_count()}" if names else cpu_name()
