"""Evaluation-stage commands: ``eval`` (MTEB) and ``drift`` (must the index be rebuilt?)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from boom_merge.cli._options import device_option

_CORPUS_HELP = "Built corpus folder (default: the one `boom-merge data build` writes)."


def _names(value: tuple[str, ...]) -> list[str] | None:
    """Comma lists from a repeatable option, flattened; None when not given."""
    names = [name.strip() for item in value for name in item.split(",") if name.strip()]
    return names or None


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


@click.command("eval")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tasks", multiple=True,
              help="Comma list: corpus sources (wordnet), local task names or MTEB task names. Default: every source.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("boom-eval"), show_default=True,
              help="Output folder: MTEB results, summary.md, summary.json, scores.png.")
@click.option("--corpus", type=click.Path(path_type=Path), help=_CORPUS_HELP)
@click.option("--in-domain", "in_domain", multiple=True,
              help="Comma list of dataset or task names in-domain for every model (overrides the models' lineage).")
@_caps(None, None)
@click.option("--force", is_flag=True, help="Replace an existing --out folder.")
def eval_command(
    models: tuple[Path, ...],
    tasks: tuple[str, ...],
    out: Path,
    corpus: Path | None,
    in_domain: tuple[str, ...],
    max_queries: int | None,
    max_corpus: int | None,
    batch_size: int,
    force: bool,
) -> None:
    """Evaluate MODEL... with MTEB; print and save a summary table and chart."""
    from boom_merge.evaluation import evaluate_models, to_text

    summary = evaluate_models(
        models,
        out,
        corpus_dir=corpus,
        tasks=_names(tasks),
        in_domain=_names(in_domain),
        max_queries=max_queries,
        max_corpus=max_corpus,
        batch_size=batch_size,
        force=force,
    )
    click.echo(to_text(summary))
    click.echo(f"MTEB results, summary.md, summary.json and scores.png in {out}")


@click.command("drift", epilog="""Examples:

\b
  boom-merge drift merged/ merged-v2/ --corpus CORPUS --json drift.json
  boom-merge drift BAAI/bge-base-en-v1.5 merged/ --device cuda --batch-size 256
""")
@click.argument("old")
@click.argument("new")
@click.option("--corpus", "--data", "data", type=click.Path(path_type=Path), help=_CORPUS_HELP)
@_caps(100, 1000)
@device_option
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
def drift_command(
    old: str, new: str, data: Path | None, max_queries: int, max_corpus: int, batch_size: int,
    device: str | None, json_out: Path | None,
) -> None:
    """How far NEW moved from OLD: cosine per text and recall@10 on an OLD index.

    OLD and NEW are model dirs or Hub ids (org/name or org/name@REVISION).
    """
    from boom_merge.drift import drift_report, format_drift
    from boom_merge.outputs import check_output_file, write_output_file

    if json_out is not None:  # refuse a bad --json path before encoding anything
        check_output_file(json_out, inputs=(old, new, data))
    report = drift_report(
        old, new, data, max_queries=max_queries, max_corpus=max_corpus, batch_size=batch_size, device=device
    )
    click.echo(format_drift(report))
    if json_out is not None:
        write_output_file(json_out, json.dumps(report.to_dict(), indent=2) + "\n", inputs=(old, new, data))


COMMANDS = [eval_command, drift_command]
