"""Python start-up cost of the ``boom_merge_hook.pth`` import hook (target <= 5 ms).

Not a test: run by hand. Runs ``python -X importtime -c pass`` N times and reports the
median cumulative import time of ``boom_merge._hook`` (everything the .pth line
imports), next to the median total start-up time of the same runs as the baseline.

    python benchmarks/startup.py --runs 30
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time

_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)")


def one_run() -> tuple[float, float]:
    """(hook cumulative import ms, whole interpreter wall ms) of one fresh interpreter."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "pass"], capture_output=True, text=True,
                            check=True)
    wall = (time.perf_counter() - start) * 1000
    hook = [int(m.group(1)) for m in map(_LINE.match, result.stderr.splitlines()) if m and m.group(2) == "boom_merge._hook"]
    if not hook:
        raise SystemExit("boom_merge._hook was not imported at start-up: is boom-merge installed?")
    return hook[0] / 1000, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    hook = statistics.median(h for h, _ in runs)
    wall = statistics.median(w for _, w in runs)
    print(f"median over {args.runs} runs: hook import {hook:.2f} ms of {wall:.1f} ms interpreter start-up "
          f"({100 * hook / wall:.1f} %); target <= 5 ms")


if __name__ == "__main__":
    main()
