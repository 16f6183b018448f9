"""Two trainings at once on one machine: how OpenMP's wait policy decides their speed.

    .venv/bin/python -m benchmarks.concurrent_training [--threads 2] [--batches 150] [--repeats 3]

Times `--batches` training steps of the classic CNN (batch 64, random digits) in fresh
processes: one alone (OpenMP's default wait policy, then OMP_WAIT_POLICY=PASSIVE, where threads
sleep at a barrier instead of spinning), then two side by side with each policy, then two with one
torch thread each. Side by side, the processes start their steps together (once each has set
up). Each figure is the median over `--repeats` rounds of one process's seconds;
all cases are measured in one run, so their ratios are comparable. A worker that runs several
flow runs at once, and pytest in several processes, are the two-at-once cases.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.machine import lscpu_model

ROOT = Path(__file__).resolve().parent.parent
STEPS = """
import sys, time, torch
from mnist_pipeline.model.network import build_model
torch.manual_seed(0)
torch.set_num_threads({threads})
model = build_model("classic")
optimiser = torch.optim.Adam(model.parameters(), 1e-3)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
print("ready", flush=True)
if sys.stdin.readline() != "go\\n":  # every process starts its steps when all are ready
    sys.exit(1)  # the parent gave up (another process failed): no steps
start = time.perf_counter()
for _ in range({batches}):
    optimiser.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimiser.step()
print(time.perf_counter() - start)
"""


def _side_by_side(copies: int, code: str, extra_env: dict[str, str]) -> list[float]:
    """Start `copies` processes at once; each one's seconds of training."""
    inherited = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env = {**inherited, **extra_env, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(copies)
    ]
    # Imports and setup take each process its own time: the steps start together, so that
    # the processes train at once for the whole of what is timed.
    if not all(proc.stdout.readline().strip() == "ready" for proc in procs):
        for proc in procs:
            proc.kill()
            proc.wait()
        sys.exit("a training process failed before its steps")
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate()[0] for proc in procs]
    if any(proc.returncode != 0 for proc in procs):
        sys.exit("a training process failed")
    return [float(out.strip()) for out in outputs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads per process")
    parser.add_argument("--batches", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    passive = {"OMP_WAIT_POLICY": "PASSIVE"}
    cases = {
        "one process alone": (1, args.threads, {}),
        "one alone, OMP_WAIT_POLICY=PASSIVE": (1, args.threads, passive),
        "two at once, default wait policy": (2, args.threads, {}),
        "two at once, OMP_WAIT_POLICY=PASSIVE": (2, args.threads, passive),
        "two at once, 1 thread each": (2, 1, {}),
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, (copies, threads, extra_env) in cases.items():
            code = STEPS.format(threads=threads, batches=args.batches)
            seconds[name] += _side_by_side(copies, code, extra_env)
    alone = statistics.median(seconds["one process alone"])
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"{name:<40} median {median:6.2f} s  ({median / alone:4.1f}x alone)")
    print(
        f"{args.batches} steps of batch 64, {args.threads} torch threads per process, "
        f"{args.repeats} rounds; CPU: {lscpu_model()}; {datetime.date.today().isoformat()}"
    )


if __name__ == "__main__":
    main()
