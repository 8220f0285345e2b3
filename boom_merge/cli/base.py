"""Base-stage command: ``base``, a plain transformer made an embedding base for ``train --base``.

Owns: the ``base`` command (flags, help, what is echoed). It may not load or save models itself:
:mod:`boom_merge.embedding_base` does.
"""

from __future__ import annotations

from pathlib import Path

import click

from boom_merge.embedding_base import POOLINGS


@click.command("base", epilog="""Examples:

\b
  boom-merge base Qwen/Qwen3-0.6B -o bases/qwen3-0.6b --max-seq-length 512
  boom-merge base Qwen/Qwen3-0.6B@main -o bases/qwen3-0.6b-instruct \\
      --query-prompt $'Instruct: Given a web search query, retrieve relevant passages\\nQuery: '
  boom-merge base google/gemma-3-270m -o bases/gemma3-bi --bidirectional --pooling mean
  boom-merge base models/gemma-3-270m-it-Q4_K_M.gguf -o bases/gemma3   # needs boom-merge[gguf]
  boom-merge base answerdotai/ModernBERT-base -o bases/modernbert --pooling cls --no-normalize
""")
@click.argument("source", metavar="FROM")
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output model directory (a sentence-transformers model).")
@click.option("--pooling", type=click.Choice(POOLINGS), default=None,
              help="Pooling of token states (default: lasttoken for decoders, mean for encoders).")
@click.option("--normalize/--no-normalize", default=True, show_default=True,
              help="End with a Normalize module (unit-length embeddings, as Qwen3-Embedding and the paper's models).")
@click.option("--bidirectional", is_flag=True,
              help="Attend both ways, where the architecture has the switch (config use_bidirectional_attention: Gemma 3).")
@click.option("--max-seq-length", type=click.IntRange(min=1), default=None,
              help="Truncate inputs to this many tokens (default: the model's maximum).")
@click.option("--query-prompt", default=None,
              help="Prompt put before queries (prompt name 'query'), e.g. $'Instruct: TASK\\nQuery: '.")
@click.option("--document-prompt", default=None, help="Prompt put before documents (prompt name 'document').")
@click.option("--force", is_flag=True, help="Replace an existing output.")
def base_command(source: str, out: Path, pooling: str | None, normalize: bool, bidirectional: bool,
                 max_seq_length: int | None, query_prompt: str | None, document_prompt: str | None,
                 force: bool) -> None:  # fmt: skip
    """Make FROM, a plain transformer, an embedding base that `train --base` takes.

    FROM is a model dir, a Hub id org/name[@REV] (the cache when offline), or a .gguf file
    (dequantized; needs the gguf extra). OUT is a complete sentence-transformers model: the
    transformer, pooling, Normalize, a pad token where the tokenizer has none (its end-of-sequence
    token), a card whose base_model is FROM's Hub id (or file name), and boom_lineage.json, so
    that members trained from OUT and their merges name FROM as their base.
    """
    from boom_merge.embedding_base import BaseSettings, make_base

    settings = BaseSettings(pooling=pooling, normalize=normalize, bidirectional=bidirectional,  # type: ignore[arg-type]
                            max_seq_length=max_seq_length, query_prompt=query_prompt, document_prompt=document_prompt)
    path = make_base(source, out, settings, force=force)
    click.echo(f"embedding base written to {path}")


COMMANDS = [base_command]
