"""Merge-stage commands: ``merge``, ``recipe``, ``incremental``, ``inspect``."""

from __future__ import annotations

from pathlib import Path

import click

from boom_merge.cli._options import device_option
from boom_merge.recipes import DTYPES, METHODS

_force = click.option("--force", is_flag=True, help="Replace an existing output.")
_allow_pickle = click.option(
    "--allow-pickle", is_flag=True, help="Accept pickled .bin weights (unpickling can run code)."
)
_cuda = click.option("--cuda", is_flag=True, help="Do the merge math on the GPU.")
_shard = click.option("--out-shard-size", default="1B", show_default=True,
                      help="Parameters per output shard; mergekit holds one shard in memory (e.g. 250M for big models).")


_dtype = click.option("--dtype", type=click.Choice(DTYPES), default=None,
                      help="dtype of the merged weights (default: the inputs'; the arithmetic runs in float32).")


@click.command("merge", epilog="""Examples:

\b
  boom-merge merge boom.yml merged/
  boom-merge merge boom.yml -o merged/ --force --dtype bfloat16
  mergekit-yaml boom.yml merged/       # the same pipeline through the import hook
""")
@click.argument("recipe", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("out", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", "out_option", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output model directory (instead of the positional OUT).")
@_force
@_cuda
@_allow_pickle
@_shard
@_dtype
def merge_command(recipe: Path, out: Path | None, out_option: Path | None, force: bool, cuda: bool,
                  allow_pickle: bool, out_shard_size: str, dtype: str | None) -> None:
    """Merge with a mergekit RECIPE into OUT (a sentence-transformers model when inputs are).

    The recipe is validated strictly (unknown keys and parameters are refused), every
    input is checked before anything is written, and OUT is written atomically; it is
    never an input model, inside one or around one.
    """
    from boom_merge.merging import merge_recipe

    if (out is None) == (out_option is None):
        raise click.UsageError("give the output directory once: OUT or -o/--out")
    path = merge_recipe(recipe, out or out_option, force=force, cuda=cuda, allow_pickle=allow_pickle,
                        out_shard_size=out_shard_size, dtype=dtype)
    click.echo(f"merged model written to {path}")


@click.command("recipe", epilog="""Examples:

\b
  boom-merge recipe members/member-* -o boom.yml
  boom-merge recipe members/member-* -o ties.yml --method ties --base BAAI/bge-base-en-v1.5 --weights ratio
  boom-merge recipe --checkpoints members/member-3-r100 -o soup.yml --method boom_linear   # checkpoint soup
""")
@click.argument("members", nargs=-1, required=True)
@click.option("-o", "--out", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Recipe file to write.")
@click.option("--method", type=click.Choice(METHODS), default="boom", show_default=True,
              help="Merge method: boom (Multi-SLERP), boom_linear, or a mergekit baseline.")
@click.option("--weights", type=click.Choice(["equal", "ratio"]), default="equal", show_default=True,
              help="ratio: proportional to each member's sample_ratio (boom_member.json).")
@click.option("--base", default=None,
              help="Base model (dir or Hub id) the members were trained from (required for task_arithmetic/ties).")
@click.option("--density", type=float, default=0.5, show_default=True, help="TIES: fraction of each task vector kept.")
@click.option("--checkpoints", is_flag=True,
              help="Merge the kept checkpoints of MEMBERS (train --keep-checkpoints K): a checkpoint soup.")
@_dtype
@_force
def recipe_command(
    members: tuple[str, ...], output: Path, method: str, weights: str, base: str | None, density: float,
    checkpoints: bool, dtype: str | None, force: bool,
) -> None:
    """Write a runnable mergekit recipe merging MEMBERS (model dirs or Hub ids)."""
    from boom_merge.recipes import checkpoint_members, write_recipe

    models = checkpoint_members(members) if checkpoints else list(members)
    path = write_recipe(models, output, method=method, weights=weights, base=base, density=density,
                        dtype=dtype, force=force)
    click.echo(f"recipe written to {path}")


@click.command("incremental")
@click.argument("old", type=click.Path(file_okay=False, path_type=Path))
@click.argument("update", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=Path), help="New model directory.")
@click.option("--update-weight", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Total share of the update model (0 keeps OLD, 1 gives UPDATE).")
@click.option("--interpolation", type=click.Choice(["slerp", "linear"]), default="slerp", show_default=True)
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Corpus directory: also report how far the update moved the embeddings.")
@_force
@_cuda
@_allow_pickle
@_shard
def incremental_command(
    old: Path, update: Path, output: Path, update_weight: float, interpolation: str,
    data: Path | None, force: bool, cuda: bool, allow_pickle: bool, out_shard_size: str,
) -> None:
    """Merge an UPDATE model into the existing OLD model; OLD is never modified."""
    from boom_merge.incremental import incremental_merge

    if data is not None:  # a bad corpus fails before NEW is written
        from boom_merge.evaluation.corpus import find_corpus_dir

        find_corpus_dir(data)
    result = incremental_merge(
        old, update, output, update_weight=update_weight, interpolation=interpolation,
        force=force, cuda=cuda, allow_pickle=allow_pickle, out_shard_size=out_shard_size,
    )
    click.echo(f"updated model written to {result.path} (lineage in boom_lineage.json)")
    if data is not None:
        from boom_merge.drift import drift_report, format_drift

        click.echo(format_drift(drift_report(old, result.path, data)))


@click.command("inspect", epilog="""Examples:

\b
  boom-merge inspect members/member-* --base BAAI/bge-base-en-v1.5 --plot diversity.png
  boom-merge inspect acme/member-0@v1 acme/member-1@v1 --device cuda
""")
@click.argument("models", nargs=-1, required=True)
@click.option("--base", default=None,
              help="Measure deltas from this base, a dir or Hub id (default: from the members' mean).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a heatmap PNG.")
@device_option
def inspect_command(models: tuple[str, ...], base: str | None, plot: Path | None, device: str | None) -> None:
    """Pairwise cosine similarity of the MODELS' weight deltas, per layer and overall.

    MODELS and --base are model dirs or Hub ids (org/name or org/name@REVISION); --device
    is where the delta arithmetic runs.
    """
    from boom_merge.similarity import member_similarity

    report = member_similarity(list(models), base=base, device=device)
    click.echo(report.table())
    if plot is not None:
        click.echo(f"heatmap written to {report.plot(plot)}")


COMMANDS = [merge_command, recipe_command, incremental_command, inspect_command]
