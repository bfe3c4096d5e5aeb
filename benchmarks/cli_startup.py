"""Wall time of each command's ``--help`` against a bare interpreter.

Each command runs as its installed console script would (``python -m <module> --help``),
``--runs`` times; the table shows the median and its ratio to ``python -c pass``.
Run: python benchmarks/cli_startup.py
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS: dict[str, list[str]] = {
    "python -c pass": ["-c", "pass"],
    "baton --help": ["-m", "owner.cli", "--help"],
    "coordinator --help": ["-m", "coordinator.cli", "--help"],
    "site-node --help": ["-m", "site_node.cli", "--help"],
}


def wall_times(args: list[str], runs: int) -> list[float]:
    """Seconds each of ``runs`` runs of ``python <args>`` took, failing on a non-zero exit."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    medians = {
        name: statistics.median(wall_times(cmd, args.runs)) for name, cmd in COMMANDS.items()
    }
    baseline = medians["python -c pass"]
    print(f"{'command':<22} {'median s':>9} {'x baseline':>11}   ({args.runs} runs each)")
    for name, seconds in medians.items():
        print(f"{name:<22} {seconds:>9.3f} {seconds / baseline:>11.1f}")


if __name__ == "__main__":
    main()
