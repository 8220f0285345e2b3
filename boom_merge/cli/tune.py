"""Tuning command: ``tune`` (merge settings chosen on dev splits).

Owns: the ``tune`` command (flags, help, what is echoed). It may not merge, score or select
itself (:mod:`boom_merge.tune` does).
"""

from __future__ import annotations

from pathlib import Path

import click

from boom_merge.cli._options import comma_names, device_option
from boom_merge.tune import OBJECTIVES, tune

_TUNE = tune.__kwdefaults__  # the library's defaults, not retyped

_EPILOG = """\b
Examples:
  boom-merge tune runs/quickstart/members/member-* --base runs/quickstart/base \\
      --corpus ~/.cache/boom-merge/corpora/HASH -o runs/tune
  boom-merge tune members/* --base base/ --corpus CORPUS --objective ood -o tune-ood/ --merge
  boom-merge tune members/* --base base/ --corpus CORPUS --no-racing -o tune-all/   # every candidate, full caps
  mergekit-yaml runs/tune/recipe.yml runs/tuned      # the chosen recipe, plain mergekit
"""


def _scales(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers separated by commas, e.g. 0.25,0.5,0.75,1,1.25") from None


@click.command("tune", epilog=_EPILOG)
@click.argument("members", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The base model the members were trained from (a dir or Hub id, like the members).")
@click.option("--corpus", "--data", "corpus", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Built corpus with dev splits (`boom-merge data build`).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output dir: recipe.yml, candidates.json/.md, pareto.png (and model/ with --merge).")
@click.option("--in-domain", multiple=True, metavar="SOURCE",
              help="Training domains whose dev splits count as ID, repeated or a comma list "
                   "(default: from the members' lineage).")
@click.option("--objective", type=click.Choice(list(OBJECTIVES)), default=_TUNE["objective"], show_default=True,
              help="balanced: mean of ID-dev and OOD-dev averages; id / ood: that average alone.")
@click.option("--max-queries", type=click.IntRange(min=1), default=_TUNE["max_queries"], show_default=True,
              help="Dev queries per source.")
@click.option("--max-corpus", type=click.IntRange(min=1), default=_TUNE["max_corpus"], show_default=True,
              help="Dev documents per source (relevant ones always kept).")
@click.option("--scales", default=",".join(f"{t:g}" for t in _TUNE["scales"]), show_default=True,
              help="Grid of scale t (output = base + t * merged delta); 1 is always included.")
@click.option("--full", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The full-data (BLS) member for the WiSE-FT line (default: the one with sample_ratio 1).")
@click.option("--full-grid", is_flag=True,
              help="Score the bag at every interpolation x weights x scale (default: scale grid on the best only).")
@click.option("--racing/--no-racing", default=_TUNE["racing"], show_default=True,
              help="Racing: score every candidate on a seeded slice of each dev source first and only those not "
                   "clearly behind on the full caps (encoding only the texts the slice did not; the same scores as "
                   "--no-racing); skipped where it could drop nothing (few candidates, under 2 slice queries a "
                   "source). --no-racing scores every candidate on the full caps.")
@click.option("--slice", "slice_fraction", type=click.FloatRange(0, 1, min_open=True), default=_TUNE["slice_fraction"],
              show_default=True, help="Racing: the share of each dev source's queries and documents in the slice.")
@click.option("--merge", "merge", is_flag=True, help="Also merge the chosen recipe into OUT/model.")
@click.option("--force", is_flag=True, help="Replace an existing OUT (its cached scores are reused).")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=_TUNE["batch_size"], show_default=True, help="Encoding batch size.")
def tune_command(
    members: tuple[Path, ...], base: Path, corpus: Path, out: Path, in_domain: tuple[str, ...], objective: str,
    max_queries: int, max_corpus: int, scales: str, full: Path | None, full_grid: bool, racing: bool,
    slice_fraction: float, merge: bool, force: bool, device: str | None, batch_size: int,
) -> None:
    """Choose how to merge MEMBER... (dirs or Hub ids org/name[@REV]) on dev splits only: scale,
    interpolation, weights, greedy soup.

    Every candidate is merged into a temporary dir, scored with MTEB on the dev splits of
    the training domains (ID) and of the OOD dev sources, and removed; the single-member
    WiSE-FT line (full-data member + base at each scale) is scored as the baseline.
    With racing (the default) candidates clearly behind on a small dev slice are dropped
    before the full dev scoring (candidates.md says which, and why). Interrupted runs
    resume from their cached scores.
    """
    result = tune(list(members), out, base=base, corpus=corpus, in_domain=comma_names(in_domain),
                  objective=objective, max_queries=max_queries, max_corpus=max_corpus, scales=_scales(scales),
                  full=full, full_grid=full_grid, racing=racing, slice_fraction=slice_fraction, merge=merge,
                  force=force, device=device, batch_size=batch_size,
                  echo=click.echo)
    scores = result.scores
    click.echo(f"chosen: {result.label} (ID dev {100 * scores.id_dev:.2f}"
               + (f", OOD dev {100 * scores.ood_dev:.2f}" if scores.ood_dev is not None else "") + ")")
    raced = f", {len(result.raced_out)} more raced out on the slice" if result.racing else ""
    click.echo(f"{len(result.candidates)} candidates on the full caps{raced} ({result.scored_now} scored now); "
               f"written to {result.out}")


COMMANDS = [tune_command]
