"""Evaluation-stage commands: ``eval`` (MTEB) and ``drift`` (must the index be rebuilt?).

Owns: the ``eval`` and ``drift`` commands (flags, help, what is echoed). It may not evaluate or
compute drift itself (:mod:`boom_merge.evaluation`, :mod:`boom_merge.incremental.drift` do), and it writes
``drift --json`` only through :mod:`boom_merge.outputs`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from boom_merge.incremental.adapter import DEFAULT_FIT_TEXTS
from boom_merge.cli._options import comma_names, device_option

_CORPUS_HELP = "Built corpus folder (default: the one `boom-merge data build` writes)."


def _caps(max_queries: int | None, max_corpus: int | None) -> Callable[[Any], Any]:
    """The --max-queries/--max-corpus/--batch-size options, with per-command defaults."""
    options = [
        click.option("--max-queries", type=click.IntRange(min=1), default=max_queries, show_default=True,
                     help="Queries per dataset (the first in file order)."),
        click.option("--max-corpus", type=click.IntRange(min=1), default=max_corpus, show_default=True,
                     help="Documents per dataset (their relevant ones always kept)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
                     help="Encoding batch size."),
    ]

    def decorate(command: Any) -> Any:
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


@click.command("eval", epilog="""Examples:

\b
  boom-merge eval merged/ members/member-3 --corpus CORPUS -o eval/
  boom-merge eval BAAI/bge-base-en-v1.5 merged/ --tasks "MTEB(eng, v2)" --device cuda --batch-size 256
  boom-merge eval merged/ --tasks wordnet,STS12,BIOSSES --max-queries 100 -o quick/
  boom-merge eval merged/ --split dev --model-name me/boom-minilm -o dev-eval/
""")
@click.argument("models", nargs=-1, required=True)
@click.option("--tasks", multiple=True,
              help="Comma list: corpus sources (wordnet), local task names, MTEB task names (STS12) or "
                   "MTEB benchmark names (\"MTEB(eng, v2)\"). Default: every corpus source.")
@click.option("-o", "--out", type=click.Path(path_type=Path), default=Path("boom-eval"), show_default=True,
              help="Output folder: MTEB results, summary.md, summary.json, scores.png.")
@click.option("--corpus", "--data", "corpus", type=click.Path(path_type=Path), help=_CORPUS_HELP)
@click.option("--split", type=click.Choice(["test", "dev"]), default="test", show_default=True,
              help="Corpus split of the local tasks (dev: for choices; test: read once, for reports).")
@click.option("--in-domain", "in_domain", multiple=True,
              help="Comma list of dataset or task names in-domain for every model (overrides the models' lineage).")
@_caps(None, None)
@click.option("--cap-mteb", is_flag=True,
              help="Apply --max-queries/--max-corpus to standard MTEB retrieval tasks too (default: local tasks only).")
@device_option
@click.option("--model-name", "model_names", multiple=True,
              help="MTEB model name (ORG/NAME) for model_meta.json, once per MODEL in order "
                   "(default: the Hub id, else boom-merge/ and the row label, the dir name).")
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
def eval_command(
    models: tuple[str, ...],
    tasks: tuple[str, ...],
    out: Path,
    corpus: Path | None,
    split: str,
    in_domain: tuple[str, ...],
    max_queries: int | None,
    max_corpus: int | None,
    batch_size: int,
    cap_mteb: bool,
    device: str | None,
    model_names: tuple[str, ...],
    force: bool,
) -> None:
    """Evaluate MODEL... (dirs or Hub ids, org/name[@REVISION]) with MTEB; print and save a summary.

    ID vs OOD comes from the models' training datasets (their lineage; mteb's registry
    for Hub models it knows).
    """
    from boom_merge.evaluation import evaluate_models, to_text

    summary = evaluate_models(
        models,
        out,
        corpus=corpus,
        split=split,  # type: ignore[arg-type]
        tasks=comma_names(tasks),
        in_domain=comma_names(in_domain),
        max_queries=max_queries,
        max_corpus=max_corpus,
        cap_standard=cap_mteb,
        batch_size=batch_size,
        device=device,
        model_names=list(model_names) or None,
        force=force,
    )
    click.echo(to_text(summary))
    click.echo(f"MTEB results, summary.md, summary.json and scores.png in {out}")


@click.command("drift", epilog="""Examples:

\b
  boom-merge drift merged/ merged-v2/ --corpus CORPUS --json drift.json
  boom-merge drift BAAI/bge-base-en-v1.5 merged/ --device cuda --batch-size 256
  boom-merge drift merged/ merged-v2/ --corpus CORPUS --fit-adapter adapter/   # keep the OLD index
  boom-merge drift merged/ merged-v2/ --corpus CORPUS --adapter affine         # score an adapter, save none
""")
@click.argument("old")
@click.argument("new")
@click.option("--corpus", "--data", "data", type=click.Path(path_type=Path), help=_CORPUS_HELP)
@_caps(100, 1000)
@device_option
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
@click.option("--fit-adapter", "fit_adapter", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Fit a query adapter (NEW -> OLD space) on the corpus' train split; save it here as a "
                   "sentence-transformers model whose queries search the OLD index.")
@click.option("--adapter", type=click.Choice(["orthogonal", "affine"]), default=None,
              help="Adapter map: orthogonal Procrustes (default with --fit-adapter) or affine with a ridge.")
@click.option("--fit-texts", type=click.IntRange(min=2), default=DEFAULT_FIT_TEXTS, show_default=True,
              help="Train-split texts the adapter is fitted on.")
@click.option("--force", is_flag=True, help="Replace an existing --fit-adapter output or --json file.")
def drift_command(
    old: str, new: str, data: Path | None, max_queries: int, max_corpus: int, batch_size: int,
    device: str | None, json_out: Path | None, fit_adapter: Path | None, adapter: str | None, fit_texts: int,
    force: bool,
) -> None:
    """How far NEW moved from OLD: cosine per text, recall@10 on an OLD index, and whether to rebuild it.

    OLD and NEW are model dirs or Hub ids (org/name or org/name@REVISION). Per dataset the
    report scores (recall@10, nDCG@10 against the qrels) NEW queries on the OLD index, with
    a query adapter when one is fitted (--fit-adapter / --adapter, on the train split only),
    and on a re-encoded index (the ceiling), and says: keep the index, keep it with the
    adapter, or rebuild it.
    """
    from boom_merge.incremental.drift import drift_report, format_drift
    from boom_merge.outputs import check_output_file, write_output_file

    if json_out is not None:  # refuse a bad --json path before encoding anything
        check_output_file(json_out, inputs=(old, new, data, *([fit_adapter] if fit_adapter else [])), force=force)
    report = drift_report(
        old, new, data, max_queries=max_queries, max_corpus=max_corpus, batch_size=batch_size, device=device,
        adapter=adapter, save_adapter=fit_adapter, fit_limit=fit_texts, force=force,  # type: ignore[arg-type]
    )
    if fit_adapter is not None:
        click.echo(f"query adapter written to {fit_adapter} (SentenceTransformer(OUT) encodes queries for the OLD index)")
    click.echo(format_drift(report))
    if json_out is not None:
        write_output_file(json_out, json.dumps(report.to_dict(), indent=2) + "\n", inputs=(old, new, data), force=force)


COMMANDS = [eval_command, drift_command]
