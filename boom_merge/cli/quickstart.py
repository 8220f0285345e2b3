"""``boom-merge quickstart``: the main job on the embedded default.

Owns: the ``quickstart`` command (flags, help, the closing report it echoes). It may not run any
stage itself (:mod:`boom_merge.quickstart` does).

Output layout (OUT = ``--out``)::

    OUT/base/, OUT/members/    the base (a copy) and the members (member-3-r100 = BLS)
    OUT/boom.yml, OUT/boom/    the BOOM recipe and merged model
    OUT/tune/recipe.yml        the tuned recipe (balanced, chosen on dev splits only)
    OUT/tune/candidates.md     every candidate's dev scores (and .json); OUT/tune/pareto.png
    OUT/tune/model/            the tuned merge ("BOOM tuned")
    OUT/eval/                  MTEB test scores: summary.md, scores.png
    OUT/quickstart.json        profile, sizes, wall time per stage, tune's choice
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("quickstart")
@click.option("--profile", type=click.Choice(["smoke", "default"]), default="default", show_default=True,
              help="smoke: a few minutes, checks the pipeline; default: the real comparison, tune included "
                   "(about 370 training steps' time: 14-16 min at 2.3-2.6 s per step, 29 min at 4.7 s; "
                   "it prints its pace).")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/quickstart"),
              show_default=True, help="Run directory (recipes/*.yml expect the default).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in OUT (finished members are kept).")
@click.option("--force", is_flag=True, help="Start over in OUT (only a run directory boom-merge wrote is replaced).")
@click.option("--seed", type=int, default=42, show_default=True, help="Training seed (member I uses SEED+I).")
def quickstart_command(profile: str, out: Path, resume: bool, force: bool, seed: int) -> None:
    """Build corpora, train BLS + BOOM members from all-MiniLM-L6-v2, merge, tune on dev splits, evaluate.

    Evaluates base / BLS / BOOM / BOOM tuned on the test splits; BOOM tuned is the merge
    `boom-merge tune` chooses (balanced objective) on dev splits only.

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
    tuned = result.tune
    click.echo(f"BOOM tuned = {tuned.label} (ID dev {100 * tuned.scores.id_dev:.2f}, "
               f"OOD dev {100 * tuned.scores.ood_dev:.2f}; chosen from {len(tuned.candidates)} candidates "
               "by the balanced objective on dev splits)")
    click.echo(f"candidates: {tuned.out}/candidates.md, {tuned.out}/pareto.png; recipe: {tuned.out}/recipe.yml")
    click.echo("wall time: " + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in result.timings.items()))
    if result.speed:  # machines differ: the total in this run's training steps compares across them
        speed = result.speed
        what = "the whole run" if speed["whole_run"] else "this resumed run (members trained earlier reused)"
        click.echo(f"pace: {speed['training_steps']} training steps x {speed['s_per_step']:.2f} s; {what} "
                   f"took as long as {speed['total_in_steps']:.0f} such steps")
    click.echo(f"results: {out}/eval/summary.md, {out}/eval/scores.png; recipe: {out}/boom.yml")


COMMANDS = [quickstart_command]
