"""Python start-up cost of the ``boom_merge_hook.pth`` import hook (target < 5 ms).

Not a test: run by hand. The .pth file runs in every interpreter of the environment,
and a global environment hides its cost when another .pth imports the same modules
first, so this measures a FRESH venv holding only boom-merge (``pip install -e REPO
--no-deps``; the hook needs nothing else): ``python -c pass`` N times with the .pth
file and N times without it (the baseline, same run, interleaved), plus the hook's
cumulative import time from ``-X importtime``.

    python benchmarks/startup.py --runs 20            # builds a venv in a temp dir
    python benchmarks/startup.py --venv /tmp/v        # reuse (or create) that venv
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PTH = "boom_merge_hook.pth"
_LINE = re.compile(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)")
# A user's interpreter caches bytecode; without it every start compiles _hook.py again.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def fresh_venv(venv: Path) -> Path:
    """A venv with only boom-merge installed (no dependencies); return its python."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(REPO), "--no-deps"], check=True)
    return python


def site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def wall_ms(python: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(python), "-c", "pass"], check=True, env=_ENV)
    return (time.perf_counter() - start) * 1000


def hook_import_ms(python: Path) -> float:
    result = subprocess.run([str(python), "-X", "importtime", "-c", "pass"], capture_output=True, text=True, check=True,
                            env=_ENV)
    for match in map(_LINE.match, result.stderr.splitlines()):
        if match and match.group(2) == "boom_merge._hook":
            return int(match.group(1)) / 1000
    raise SystemExit("boom_merge._hook was not imported at start-up: is boom-merge installed in the venv?")


def measure(python: Path, runs: int) -> dict[str, float]:
    """Median wall ms with and without the .pth file (interleaved), and the hook's import ms."""
    pth = site_packages(python) / PTH
    parked = pth.with_name(PTH + ".off")
    with_hook, without, hook = [], [], []
    wall_ms(python)  # writes the bytecode caches
    try:
        for _ in range(runs):
            with_hook.append(wall_ms(python))
            hook.append(hook_import_ms(python))
            pth.rename(parked)
            without.append(wall_ms(python))
            parked.rename(pth)
    finally:
        if parked.exists():
            parked.rename(pth)
    return {"with": statistics.median(with_hook), "without": statistics.median(without),
            "hook_import": statistics.median(hook)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--venv", type=Path, default=None, help="venv to use (created if missing)")
    args = parser.parse_args()
    tmp = None if args.venv else Path(tempfile.mkdtemp(prefix="boom-startup-"))
    try:
        python = fresh_venv(args.venv or tmp / "venv")
        result = measure(python, args.runs)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"fresh venv, median of {args.runs} starts: python -c pass {result['with']:.1f} ms with {PTH}, "
          f"{result['without']:.1f} ms without (+{result['with'] - result['without']:.1f} ms); "
          f"boom_merge._hook import {result['hook_import']:.2f} ms (target < 5 ms)")


if __name__ == "__main__":
    main()
