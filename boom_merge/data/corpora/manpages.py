"""Linux man pages (Debian ``manpages``, ``manpages-dev``, ``man-db``): NAME line -> DESCRIPTION.

Owns: finding and rendering man pages into pairs. It never writes files and may not decide the
split (:mod:`.common` does).

Pages are rendered with groff as ``man`` would (``preconv | tbl | nroff``), plain text,
one very long line per paragraph. ``.so`` redirect stubs and links are skipped (each
page once), and so are ``gcloud`` pages, which would otherwise swamp section 1 on
machines with the Google Cloud SDK. Rendering is the slow part: only the headwords that
the build selects are rendered, in parallel, with a progress bar.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from boom_merge.data.corpora.common import Pair, Selector, clean_text

logger = logging.getLogger(__name__)

SECTIONS = "12345678"
EXCLUDED_PREFIXES = ("gcloud",)
_RENDER = ["groff", "-k", "-t", "-man", "-Tutf8", "-P-cbou", "-rLL=2000n", "-rHY=0"]
_HEADING = re.compile(r"^[A-Z][A-Z0-9 ]*$")


def page_name(path: Path) -> str:
    """``open.2.gz`` -> ``open``."""
    name = path.name.removesuffix(".gz")
    return name.rsplit(".", 1)[0] if "." in name else name


def list_pages(root: Path) -> dict[Path, str]:
    """Every real page under ``root/man[1-8]`` (resolved path -> name), without stubs or links."""
    pages: dict[Path, str] = {}
    for section in SECTIONS:
        for path in sorted((root / f"man{section}").glob("*")):
            name = page_name(path)
            if path.is_symlink() or not path.is_file() or name.startswith(EXCLUDED_PREFIXES):
                continue
            opener = gzip.open if path.suffix == ".gz" else open
            with opener(path, "rb") as handle:
                if handle.read(4) == b".so ":
                    continue
            pages[path] = name
    return pages


def sections(text: str) -> dict[str, str]:
    """Split rendered man text into ``{HEADING: body}`` by its unindented headings."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if _HEADING.match(line):
            current = found.setdefault(line.strip(), [])
        elif current is not None:
            current.append(line)
    return {heading: "\n".join(lines) for heading, lines in found.items()}


def render(path: Path) -> str:
    """Plain text of one page (empty if groff fails on it)."""
    source = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    result = subprocess.run(_RENDER, input=source, capture_output=True, check=False)
    if result.returncode != 0:
        logger.info("groff failed on %s: %s", path, result.stderr[:200])
    return result.stdout.decode("utf-8", errors="replace")


def parse_page(text: str) -> tuple[str, str] | None:
    """Return (NAME line, first DESCRIPTION paragraphs) of a rendered page, if both exist."""
    parts = sections(text)
    name, description = parts.get("NAME", "").strip(), parts.get("DESCRIPTION", "").strip()
    if not name or not description:
        return None
    return clean_text(name, 300), clean_text(description)


def read_manpages(root: Path, select: Selector) -> list[Pair]:
    """Pairs (NAME line, DESCRIPTION) for the pages whose names the build selects."""
    pages = list_pages(root)
    wanted = select(pages.values())
    paths = [path for path, name in pages.items() if name in wanted]
    pairs = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        texts = pool.map(render, paths)
        for path, text in tqdm(zip(paths, texts, strict=True), total=len(paths), desc="man pages", unit="page"):
            parsed = parse_page(text)
            if parsed:
                pairs.append(Pair(key=pages[path], query=parsed[0], doc=parsed[1]))
    return pairs
