"""WordSim-353 (Finkelstein et al., 2002): 353 word pairs with mean human similarity scores.

Owns: fetching and reading WordSim-353. It never installs or imports gensim and writes only the
wheel, into the directory it is given.

An evaluation-only source (graded similarity, scored by Spearman correlation). The TSV
ships inside the gensim wheel as ``gensim/test/test_data/wordsim353.tsv``; it is read
with ``zipfile`` from a wheel that ``pip download gensim --no-deps`` puts in the cache,
so gensim itself is never installed or imported.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

from boom_merge.errors import BoomError

logger = logging.getLogger(__name__)

MEMBER = "gensim/test/test_data/wordsim353.tsv"
WHEEL_GLOB = "gensim-*.whl"


def download_command(directory: Path) -> list[str]:
    """The pip command that puts a gensim wheel into ``directory``."""
    return [sys.executable, "-m", "pip", "download", "gensim", "--no-deps", "--only-binary=:all:", "-d", str(directory)]


def fetch_wheel(directory: Path) -> None:
    """Download the gensim wheel into ``directory`` unless one is there; failures only log."""
    if any(directory.glob(WHEEL_GLOB)):
        return
    directory.mkdir(parents=True, exist_ok=True)
    logger.info("fetching the gensim wheel for WordSim-353 into %s", directory)
    result = subprocess.run(download_command(directory), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        logger.warning("pip download gensim failed: %s", result.stderr.strip()[-300:])


def parse_wordsim(text: str, path: Path) -> list[tuple[str, str, float]]:
    """(word1, word2, score) rows of the TSV; ``#`` lines are comments."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            rows.append((fields[0].strip(), fields[1].strip(), float(fields[2])))
        except (IndexError, ValueError):
            raise BoomError(f"{MEMBER} line {number}: expected word, word, score", path=path) from None
    return rows


def read_wordsim(directory: Path) -> list[tuple[str, str, float]]:
    """The WordSim-353 rows from the gensim wheel in ``directory``."""
    wheel = sorted(directory.glob(WHEEL_GLOB))[-1]
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(MEMBER).decode("utf-8")
    return parse_wordsim(text, wheel)
