"""Hub commands: ``push``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("push")
@click.argument("model", type=click.Path(file_okay=False, path_type=Path))
@click.option("--repo-id", required=True, help="Target repository, USER/NAME.")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--revision", default=None, help="Branch to push to (created if missing).")
@click.option("--dry-run", is_flag=True, help="Print the files and the card; upload nothing.")
@click.option(
    "--results",
    "results",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Saved MTEB results (boom-merge eval --out) to put in the card's model-index.",
)
def push(model: Path, repo_id: str, private: bool, revision: str | None, dry_run: bool, results: Path | None) -> None:
    """Publish MODEL on the Hugging Face Hub with a generated model card.

    The token comes from HF_TOKEN or the saved login (`hf auth login`).
    """
    from boom_merge.hub import push_model

    plan = push_model(model, repo_id, private=private, revision=revision, dry_run=dry_run, results_dir=results)
    if dry_run:
        target = f"{plan.repo_id}@{plan.revision}" if plan.revision else plan.repo_id
        click.echo(f"dry run: would upload {len(plan.files)} files to {target}:")
        for name in plan.files:
            click.echo(f"  {name}")
        click.echo("\n--- README.md ---")
        click.echo(plan.card)
    else:
        click.echo(f"pushed {len(plan.files)} files: {plan.commit_url}")


COMMANDS = [push]
