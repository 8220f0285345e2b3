"""``boom-merge data``: build the embedded corpora from installed packages, list the sources.

Owns: the ``data build`` / ``data list`` commands (flags, help, what is echoed). It may not
build or read corpora itself: it calls :mod:`boom_merge.data.corpora`.
"""

from __future__ import annotations

from pathlib import Path

import click

from boom_merge.data.corpora.common import DEFAULT_MAX_TEST_QUERIES, DEFAULT_MAX_TRAIN


@click.group()
def data() -> None:
    """Build and list the embedded training/dev/test corpora.

    \b
    Examples:
      boom-merge data list
      boom-merge data build --max-train 600
    """


@data.command("build")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output directory (default: the user cache, keyed by the options).",
)
@click.option(
    "--source", "sources", multiple=True, metavar="NAME", help="Build only this source (repeatable; default: all)."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the train/test split and sampling.")
@click.option(
    "--max-train", type=int, default=DEFAULT_MAX_TRAIN, show_default=True, help="Training lines per source at most."
)
@click.option(
    "--max-test-queries",
    type=int,
    default=DEFAULT_MAX_TEST_QUERIES,
    show_default=True,
    help="Test queries per source at most.",
)
@click.option(
    "--max-dev-queries",
    type=int,
    default=None,
    help="Dev queries per source at most (dev/NAME/, for choices such as `boom-merge tune`); "
    "default: the --max-test-queries value.",
)
@click.option("--force", is_flag=True, help="Rebuild even if cached; replace an existing --out.")
def build(
    out: Path | None,
    sources: tuple[str, ...],
    seed: int,
    max_train: int,
    max_test_queries: int,
    max_dev_queries: int | None,
    force: bool,
) -> None:
    """Build corpora offline from Debian/PyPI packages; missing sources are reported and skipped.

    Each retrieval source gets train/NAME.jsonl, test/NAME/ and (except the out-of-domain
    tests devil and python_faq) dev/NAME/, split by headword.

    \b
    Examples:
      boom-merge data build
      boom-merge data build -o corpora --source wordnet --source jargon --max-train 500 --max-dev-queries 100
    """
    from boom_merge.data.corpora import build_corpora

    result = build_corpora(
        out,
        sources or None,
        seed=seed,
        max_train=max_train,
        max_test_queries=max_test_queries,
        max_dev_queries=max_test_queries if max_dev_queries is None else max_dev_queries,
        force=force,
    )
    click.echo(f"{'cached' if result.cached else 'built'}: {result.path}")
    for name, counts in result.built.items():
        click.echo(f"  {name}: " + ", ".join(f"{key} {value}" for key, value in counts.items()))
    for name, command in result.missing.items():
        click.echo(f"  missing {name}: install with `{command}`")


@data.command("list")
def list_sources() -> None:
    """Show each known source, its role (train, ood_test, ood_dev) and whether it is installed here.

    \b
    Examples:
      boom-merge data list
    """
    from boom_merge.data.corpora import available_sources
    from boom_merge.data.corpora.sources import registry

    roles = {name: source.role for name, source in registry().items()}
    for name, install in available_sources().items():
        state = "available" if install is None else f"missing (install with `{install}`)"
        click.echo(f"{name}: {state} [{roles[name]}]")


COMMANDS = [data]
