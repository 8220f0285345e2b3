"""Merge-stage commands: ``merge``, ``recipe``, ``incremental``, ``inspect``, ``card``.

Owns: the ``merge``, ``recipe``, ``incremental``, ``inspect`` and ``card`` commands (flags, help,
what is echoed). It may not merge, write recipes, cards or score anything itself:
:mod:`boom_merge.merge.pipeline`, :mod:`boom_merge.merge.recipes`, :mod:`boom_merge.incremental.update`,
:mod:`boom_merge.incremental.update_weight`, :mod:`boom_merge.incremental.drift`, :mod:`boom_merge.inspection` and
:mod:`boom_merge.merge.merged_elsewhere` do.
"""

from __future__ import annotations

from pathlib import Path

import click

from boom_merge.cli._options import allow_pickle_option, device_option
from boom_merge.merge.pipeline import DEFAULT_OUT_SHARD_SIZE
from boom_merge.merge.recipe_writing import METHODS
from boom_merge.merge.recipes import DTYPES
from boom_merge.incremental.update_weight import auto_update_weight

_AUTO = auto_update_weight.__kwdefaults__  # --update-weight auto's defaults: the library's, not retyped

_force = click.option("--force", is_flag=True, help="Replace an existing output.")
_allow_pickle = allow_pickle_option
_cuda = click.option("--cuda", is_flag=True, help="Do the merge math on the GPU.")
_shard = click.option("--out-shard-size", default=DEFAULT_OUT_SHARD_SIZE, show_default=True,
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
    from boom_merge.merge.pipeline import merge_recipe

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
    from boom_merge.merge.recipe_writing import checkpoint_members, write_recipe

    models = checkpoint_members(members) if checkpoints else list(members)
    path = write_recipe(models, output, method=method, weights=weights, base=base, density=density,
                        dtype=dtype, force=force)
    click.echo(f"recipe written to {path}")


def _update_weight(value: str | None) -> float | str | None:
    if value is None or value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number or auto") from None


def _grid(value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers separated by commas, e.g. 0.25,0.5,0.75,1") from None


@click.command("incremental", epilog="""Examples:

\b
  boom-merge incremental merged/ update/ -o merged-v2/                       # (1-0.5)*OLD + 0.5*UPDATE, slerp
  boom-merge incremental merged/ update/ -o merged-v2/ --mode add --update-weight 1
  boom-merge incremental merged/ update/ -o merged-v2/ --update-weight auto --corpus CORPUS
  boom-merge incremental merged/ update/ -o merged-v2/ --corpus CORPUS --fit-adapter merged-v2-queries/
  mergekit-yaml merged-v2/boom_recipe.yml again/                              # the same merge, plain mergekit
""")
@click.argument("old", type=click.Path(file_okay=False, path_type=Path))
@click.argument("update", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--out", "--output", "output", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="New model directory.")
@click.option("--mode", type=click.Choice(["interpolate", "add"]), default="interpolate", show_default=True,
              help="interpolate: (1-α)·OLD + α·UPDATE; add: OLD + λ·(UPDATE − BASE), BASE the model UPDATE was "
                   "trained from (task_arithmetic).")
@click.option("--update-weight", default=None, metavar="W|auto",
              help="α (interpolate, in [0, 1], default 0.5) or λ (add, >= 0, default 1); auto: chosen on the dev "
                   "splits of --corpus by the rule printed before scoring.")
@click.option("--update-base", default=None,
              help="add mode: BASE, the model UPDATE was trained from (dir or Hub id; default: from its "
                   "boom_member.json).")
@click.option("--interpolation", type=click.Choice(["slerp", "linear"]), default="slerp", show_default=True,
              help="interpolate mode: spherical or linear interpolation of each tensor.")
@click.option("--corpus", "--data", "data", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Built corpus: report how far the update moved the embeddings; the dev splits for auto; "
                   "the train split an adapter is fitted on.")
@click.option("--max-old-loss", type=click.FloatRange(min=0.0), default=_AUTO["max_old_loss"], show_default=True,
              help="auto: the most (points x100) the old domains' dev average may fall below OLD's.")
@click.option("--weight-grid", default=None,
              help="auto: the weights scored (default interpolate 0.1,...,1; add 0.25,0.5,0.75,1,1.25,1.5); "
                   "0 (OLD) is always scored.")
@click.option("--max-queries", type=click.IntRange(min=1), default=_AUTO["max_queries"], show_default=True,
              help="auto: dev queries per source.")
@click.option("--max-corpus", type=click.IntRange(min=1), default=_AUTO["max_corpus"], show_default=True,
              help="auto: dev documents per source (relevant ones always kept).")
@click.option("--fit-adapter", "fit_adapter", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also fit a query adapter NEW -> OLD on the corpus' train split and save it here "
                   "(needs --corpus); the drift report scores it.")
@click.option("--adapter", type=click.Choice(["orthogonal", "affine"]), default="orthogonal", show_default=True,
              help="The adapter's map (with --fit-adapter).")
@device_option
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="Encoding batch size.")
@_force
@_cuda
@_allow_pickle
@_shard
def incremental_command(
    old: Path, update: Path, output: Path, mode: str, update_weight: str | None, update_base: str | None,
    interpolation: str, data: Path | None, max_old_loss: float, weight_grid: str | None, max_queries: int,
    max_corpus: int, fit_adapter: Path | None, adapter: str, device: str | None, batch_size: int, force: bool,
    cuda: bool, allow_pickle: bool, out_shard_size: str,
) -> None:
    """Merge an UPDATE model into the existing OLD model; OLD is never modified.

    OLD, UPDATE and --update-base are dirs or Hub ids (org/name[@REV]).

    The recipe (boom_recipe.yml in the output) runs with plain mergekit-yaml; the lineage
    records the mode, the weight, and every input's hash.
    """
    from boom_merge.incremental.update import incremental_merge

    weight = _update_weight(update_weight)
    if (weight == "auto" or fit_adapter is not None) and data is None:
        raise click.UsageError("--update-weight auto and --fit-adapter need --corpus CORPUS")
    if data is not None:  # a bad corpus (test splits, the adapter's train split) fails before NEW is written
        from boom_merge.incremental.drift import read_drift_inputs

        read_drift_inputs(data, fit=fit_adapter is not None)
    if fit_adapter is not None:
        from boom_merge.outputs import check_apart, check_output

        check_apart(fit_adapter, output)
        check_output(fit_adapter, inputs=(old, update, data, output), force=force)
    options = dict(mode=mode, interpolation=interpolation, update_base=update_base, force=force, cuda=cuda,
                   allow_pickle=allow_pickle, out_shard_size=out_shard_size)
    if weight == "auto":
        auto = auto_update_weight(old, update, output, corpus=data, grid=_grid(weight_grid), max_old_loss=max_old_loss,
                                  max_queries=max_queries, max_corpus=max_corpus, device=device,
                                  batch_size=batch_size, echo=click.echo, **options)
        result = auto.result
        click.echo(f"chosen update weight {auto.chosen.weight:g} (old dev {100 * auto.chosen.old_dev:.2f}, "
                   f"new dev {100 * auto.chosen.new_dev:.2f}; {auto.scored_now} scored now); "
                   f"table and plot in {result.path / 'update_weight'}")
    else:
        result = incremental_merge(old, update, output, update_weight=weight, **options)  # type: ignore[arg-type]
    report = None
    if data is not None:
        from boom_merge.incremental.drift import drift_report
        from boom_merge.outputs import discard_output

        try:
            report = drift_report(old, result.path, data, device=device, batch_size=batch_size,
                                  adapter=adapter if fit_adapter else None, save_adapter=fit_adapter, force=force)
        except BaseException:  # all or nothing: no NEW without its report and adapter
            discard_output(result.path)
            raise
    click.echo(f"updated model written to {result.path} (lineage in boom_lineage.json)")
    if report is not None:
        from boom_merge.incremental.drift import format_drift

        click.echo(format_drift(report))
        if fit_adapter is not None:
            click.echo(f"query adapter written to {fit_adapter}")


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
    from boom_merge.inspection import member_similarity

    report = member_similarity(list(models), base=base, device=device, plot=plot)
    click.echo(report.table())
    if plot is not None:
        click.echo(f"heatmap written to {plot}")


@click.command("card", epilog="""Examples:

\b
  # merged in Python with sentence-transformers, then described as boom-merge would have:
  #   SentenceTransformer.merge(members, method="boom", base_model=BASE).save_pretrained("merged")
  boom-merge card merged/ --recipe boom.yml
  boom-merge push merged/ --repo-id USER/my-boom-model   # pushes a truthful card
""")
@click.argument("model", type=click.Path(file_okay=False, path_type=Path))
@click.option("--recipe", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The mergekit recipe MODEL was merged with (same models, method and parameters).")
def card_command(model: Path, recipe: Path) -> None:
    """Write boom-merge's recipe copy, lineage and card into MODEL, a model merged elsewhere.

    For models merged with sentence-transformers' SentenceTransformer.merge or plain mergekit:
    the RECIPE's inputs are checked as a merge checks them and must match MODEL (same tensors,
    same sentence-transformers head); MODEL may not be one of them. Only boom_recipe.yml,
    boom_lineage.json, boom_members/ and README.md of MODEL are (re)written, each atomically.
    """
    from boom_merge.merge.merged_elsewhere import write_card

    click.echo(f"card written to {write_card(model, recipe)}")


COMMANDS = [merge_command, recipe_command, incremental_command, inspect_command, card_command]
