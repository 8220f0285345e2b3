"""Hub commands: ``push``.

Owns: the ``push`` command (flags, help, what is echoed). It may not build the card or upload
itself (:mod:`boom_merge.hub` does).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("push", epilog="""Examples:

\b
  boom-merge push merged/ --repo-id USER/boom-minilm --dry-run
  boom-merge push merged/ --repo-id USER/boom-minilm --results eval/ --private
  boom-merge push members/member-0-r40 --repo-id USER/member-0 --revision dev
""")
@click.argument("model")
@click.option("--repo-id", required=True, help="Target repository, USER/NAME (also the card's title and usage name).")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--revision", default=None, help="Branch to push to (created if missing).")
@click.option("--dry-run", is_flag=True, help="Print the files and the card; upload nothing.")
@click.option(
    "--results",
    "results",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Evaluation results (the folder `boom-merge eval --out` wrote) for the card and its model-index.",
)
@click.option("--include-capped", is_flag=True,
              help="Also put scores of capped evaluations (--max-queries/--max-corpus) in model-index (marked capped).")
def push(
    model: str, repo_id: str, private: bool, revision: str | None, dry_run: bool, results: Path | None,
    include_capped: bool,
) -> None:
    """Publish MODEL (a model dir or Hub id) on the Hugging Face Hub with a model card.

    The card is built from the model's provenance (boom_lineage.json, boom_member.json) and
    titled with --repo-id; a trained member keeps the card sentence-transformers wrote, extended.
    The token comes from HF_TOKEN or the saved login (`hf auth login`). Local paths in the
    uploaded recipe and provenance files are written as their last parts (a Hub cache snapshot
    as its Hub id and commit); the local files are not changed.
    """
    from boom_merge.hub import push_model

    plan = push_model(model, repo_id, private=private, revision=revision, dry_run=dry_run, results_dir=results,
                      include_capped=include_capped)
    if dry_run:
        target = f"{plan.repo_id}@{plan.revision}" if plan.revision else plan.repo_id
        click.echo(f"dry run: would upload {len(plan.files)} files to {target}:")
        for name in plan.files:
            click.echo(f"  {name}")
        if plan.portable:
            click.echo(f"local paths written as names or Hub ids in the uploaded {', '.join(sorted(plan.portable))}")
        if plan.left_out:
            click.echo(f"left out (they name a local path that cannot be rewritten): {', '.join(plan.left_out)}")
        click.echo("\n--- README.md ---")
        click.echo(plan.card)
    else:
        click.echo(f"pushed {len(plan.files)} files: {plan.commit_url}")


COMMANDS = [push]
