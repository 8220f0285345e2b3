"""``boom-merge quickstart``: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("quickstart")
@click.option("--profile", type=click.Choice(["smoke", "default"]), default="default", show_default=True,
              help="smoke: ~1.5 min, checks the pipeline; default: the real comparison (~11 min on 2 idle cores).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/quickstart"),
              show_default=True, help="Run directory (recipes/*.yml expect the default).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT (finished members are kept).")
@click.option("--force", is_flag=True, help="Start over in OUT (only a run directory boom-merge wrote is replaced).")
@click.option("--seed", type=int, default=42, show_default=True, help="Training seed (member I uses SEED+I).")
def quickstart_command(profile: str, out: Path, resume: bool, force: bool, seed: int) -> None:
    """Build corpora, train BLS + BOOM members from all-MiniLM-L6-v2, merge, evaluate.

    \b
    Examples:
      boom-merge quickstart                          # the main job, into runs/quickstart
      boom-merge quickstart --profile smoke -o runs/smoke
      boom-merge quickstart --resume                 # continue an interrupted run
    """
    from boom_merge.evaluation import to_text
    from boom_merge.quickstart import run_quickstart

    result = run_quickstart(profile, out, force=force, resume=resume, seed=seed, echo=click.echo)
    click.echo("")
    click.echo(to_text(result.summary))
    click.echo("")
    click.echo("wall time: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result.timings.items()))
    click.echo(f"results: {out}/eval/summary.md, {out}/eval/scores.png; recipe: {out}/boom.yml")


COMMANDS = [quickstart_command]
