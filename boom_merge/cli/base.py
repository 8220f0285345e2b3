"""Base-stage command: ``base``, a plain transformer made an embedding base for ``train --base``.

Owns: the ``base`` command (flags, help, what is echoed). Its settings options are generated from
:class:`~boom_merge.embedding_base.BaseSettings` (:func:`boom_merge.cli._options.config_options`).
It may not load or save models itself: :mod:`boom_merge.embedding_base` does.
"""

from __future__ import annotations

from pathlib import Path

import click

from boom_merge.cli._options import allow_pickle_option, config_options
from boom_merge.embedding_base import BaseSettings


@click.command("base", epilog="""Examples:

\b
  boom-merge base Qwen/Qwen3-0.6B -o bases/qwen3-0.6b --max-seq-length 512
  boom-merge base Qwen/Qwen3-0.6B@main -o bases/qwen3-0.6b-instruct \\
      --query-prompt $'Instruct: Given a web search query, retrieve relevant passages\\nQuery: '
  boom-merge base google/gemma-3-270m -o bases/gemma3-bi --bidirectional --pooling mean
  boom-merge base models/gemma-3-270m-it-Q4_K_M.gguf -o bases/gemma3   # needs boom-merge[gguf]
  hf download unsloth/gemma-3-270m-it-GGUF gemma-3-270m-it-Q4_K_M.gguf
  boom-merge base unsloth/gemma-3-270m-it-GGUF -o bases/gemma3          # its one .gguf file in the cache
  boom-merge base old-org/pickled-lm -o bases/old --allow-pickle        # pytorch_model.bin only
  boom-merge base answerdotai/ModernBERT-base -o bases/modernbert --pooling cls --no-normalize
""")
@click.argument("source", metavar="FROM")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output model directory (a sentence-transformers model).")
@config_options(BaseSettings, "settings")
@allow_pickle_option
@click.option("--force", is_flag=True, help="Replace an existing output.")
def base_command(source: str, out: Path, settings: BaseSettings, allow_pickle: bool, force: bool) -> None:
    """Make FROM, a plain transformer, an embedding base that `train --base` takes.

    FROM is a model dir, a Hub id org/name[@REV] (the cache when offline), or a .gguf file
    (dequantized; needs the gguf extra). A Hub id of a GGUF-only repo takes the repo's one .gguf
    file in the cache (put it there with `hf download org/name FILE.gguf`); where the cache holds
    several, pass the path of the one you want (`hf download` prints it). The options mirror
    BaseSettings (boom_merge.embedding_base). OUT is a complete sentence-transformers model: the
    transformer, pooling, Normalize, a pad token where the tokenizer has none (its end-of-sequence
    token), a card whose base_model is FROM's Hub id (or file name), and boom_lineage.json, so
    that members trained from OUT and their merges name FROM as their base.
    """
    from boom_merge.embedding_base import make_base

    path = make_base(source, out, settings, force=force, allow_pickle=allow_pickle)
    click.echo(f"embedding base written to {path}")


COMMANDS = [base_command]
