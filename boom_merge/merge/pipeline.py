"""The one merge pipeline: validate -> check inputs -> plan the head -> mergekit -> finish.

Owns: the one merge pipeline; every merge goes through it. It may not train, tune or evaluate
and never writes into an input; the lineage and the card are written by
:mod:`boom_merge.lineage` and :mod:`boom_merge.card.build` (an incremental update's starting lineage
arrives as one of :func:`run_recipe`'s ``extra_files``).

Every merge runs these steps, whoever starts it: ``boom-merge merge``
(:func:`merge_recipe`), ``incremental`` and ``tune`` (:func:`run_recipe`), and plain
``mergekit-yaml`` through the import hook (:func:`merge_in_place`, called by the
wrapped ``mergekit.merge.run_merge``, see :mod:`boom_merge.mergekit_yaml`).

1. :func:`~boom_merge.merge.recipes.load_recipe` / :func:`~boom_merge.merge.recipes.validate_config`
   (in recipes.py, re-exported here): a strict recipe. Unknown keys and unknown method
   parameters are refused naming the valid ones; weights finite, non-negative, with a
   positive sum; no empty ``models`` list, no model listed twice. Every recipe error
   names the recipe file.
2. :func:`plan_merge`: the output rule (:func:`boom_merge.outputs.check_output`: never
   into, over or around an input), inputs resolved (Hub ids through
   :func:`boom_merge.model_refs.resolve_model`) and checked (config, tokenizer, honest
   safetensors headers, same tensors, finite weights, no pickles unless allowed; a BOOM
   merge's kernel checks the transformer's weights as the merge reads them, so they are
   read once, and its refusal is mapped back to the input's file by :func:`_mergekit`), the
   sentence-transformers head planned (:func:`boom_merge.merge.st_head.plan_head`: inputs that
   embed differently are refused), and the dtype rule applied (:func:`output_dtype`): the output
   keeps the first input's stored dtype, the arithmetic runs in float32 (a BOOM kernel widens each
   input itself), ``dtype`` overrides the output's. mergekit is given each input as the dir holding
   its transformer (a Hub snapshot, a 0.x model's ``0_Transformer/``), read as the class
   sentence-transformers loads (:func:`_for_mergekit`).
3. mergekit's own ``run_merge``, with the inputs read ahead of it (:mod:`boom_merge.merge.read_ahead`:
   the disk reads while the kernel computes) and the kernels' direction buffer reused
   (:func:`boom_merge.merge.methods.reusing_scratch`).
4. :func:`finish_merge`: the head (settings, modules, merged ``Dense`` layers), the
   lineage (:func:`boom_merge.lineage.write_lineage`) and the card
   (:func:`boom_merge.card.build.write_model_card`, titled with the final output name).

boom-merge's own commands write atomically (:func:`boom_merge.outputs.atomic_output_dir`);
plain ``mergekit-yaml`` writes OUT itself, as mergekit does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boom_merge.merge.checks import check_same_tensors, model_files
from boom_merge.errors import BoomError
from boom_merge.merge.recipes import DTYPES, load_recipe, ordered_references, validate_config

logger = logging.getLogger(__name__)

RECIPE_FILE = "boom_recipe.yml"
# mergekit keeps a whole output shard in memory before writing it; its default (5B
# parameters) means the whole merged model. 1B bounds that for large merges.
DEFAULT_OUT_SHARD_SIZE = "1B"
ALLOW_PICKLE_ENV = "BOOM_MERGE_ALLOW_PICKLE"  # plain mergekit-yaml's --allow-pickle
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


@dataclass(frozen=True)
class MergeJob:
    """A validated, checked merge, ready for mergekit.

    ``config`` is what mergekit runs (dtype rule applied, Hub ids replaced by their
    snapshots); ``refs`` the recipe's inputs in recipe order, base last; ``models`` their
    resolved local dirs (same order); ``files`` the weight files of the transformer in each (same
    order); ``head`` the sentence-transformers head plan (of the recipe's own references), ``None``
    for plain transformers inputs.
    """

    config: Any
    refs: tuple[Any, ...]
    models: tuple[Any, ...]
    files: tuple[Any, ...]
    head: Any


# ---------------------------------------------------------------- 2. plan (step 1 is in recipes.py)


def output_dtype(continued: str | Path) -> str | None:
    """The one output dtype rule: the dtype stored in the model the output continues (most of its safetensors'
    floating tensors; not its config's claim), None if unknown. A plain merge continues its first input, an
    incremental update OLD (its recipe's ``out_dtype``); ``dtype`` and a recipe's ``out_dtype`` override it."""
    from boom_merge.model_refs import transformer_dir

    files = model_files(transformer_dir(Path(continued)), allow_pickle=True)  # headers only: nothing is unpickled
    counts = Counter(_SAFETENSORS_DTYPES[t.dtype] for t in files.tensors.values() if t.dtype in _SAFETENSORS_DTYPES)
    return counts.most_common(1)[0][0] if counts else None


def _with_dtypes(config: Any, stored: str | None, dtype: str | None, *, kernel_widens: bool = False) -> Any:
    """The inputs' dtype out, float32 arithmetic, ``dtype`` overriding the output's.

    ``kernel_widens``: the kernel does the arithmetic in float32 itself (the BOOM methods), so
    mergekit hands it the stored tensors instead of M float32 copies.
    """
    if dtype is not None and dtype not in DTYPES:
        raise BoomError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    updates: dict[str, str] = {}
    if config.dtype is None and stored != "float64" and not kernel_widens:
        updates["dtype"] = "float32"
    out = dtype or config.out_dtype or (stored if config.dtype is None else None)
    if out is not None and out != (updates.get("dtype") or config.dtype):
        updates["out_dtype"] = out
    return config.model_copy(update=updates, deep=True)


def _replaced(data: Any, names: dict[str, Any]) -> Any:
    if isinstance(data, dict):
        return {key: _replaced(value, names) for key, value in data.items()}
    if isinstance(data, list):
        return [_replaced(value, names) for value in data]
    return names.get(data, data) if isinstance(data, str) else data


def _for_mergekit(config: Any, refs: tuple[Any, ...], models: tuple[Any, ...], files: list[Any]) -> Any:
    """The configuration mergekit runs: each input named by the dir holding its transformer.

    Hub ids are replaced by the snapshots they resolved to (mergekit would resolve them again and
    ask the Hub, even with HF_HUB_OFFLINE and a full cache); a sentence-transformers 0.x model by its
    ``0_Transformer/``; and a checkpoint whose config names another class than the weights it stores
    (Qwen3-Embedding: a ``Qwen3ForCausalLM`` config over bare ``Qwen3Model`` weights) is read as the
    class sentence-transformers loads (mergekit's ``override_architecture``).
    """
    from mergekit.config import MergeConfiguration

    from boom_merge.model_refs import transformer_dir

    names: dict[str, Any] = {}
    for ref, model, stored in zip(refs, models, files):
        if ref.lora is not None:
            continue
        where = transformer_dir(Path(model.path))
        stored_as = _stored_class(where, stored)
        if stored_as is not None:
            names[str(ref)] = {"model": str(where), "override_architecture": stored_as}
        elif where != Path(model.path) or (model.hub_id is not None and not Path(ref.model.path).is_dir()):
            names[str(ref)] = str(where)
    if not names:
        return config
    return MergeConfiguration.model_validate(_replaced(config.model_dump(mode="json", exclude_none=True), names))


def _stored_class(model_dir: Path, stored: Any) -> str | None:
    """The class whose weights ``model_dir`` stores when its config names another one, else None.

    That class is the one sentence-transformers loads (``AutoModel``: :mod:`boom_merge.merge.model_class`).
    """
    import json

    from boom_merge.merge.model_class import load_rule

    rule = load_rule(model_dir)
    try:
        named = json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("architectures")
    except (OSError, ValueError, AttributeError):
        return None
    if rule is None or not isinstance(named, list) or not named or named[0] == rule.class_name:
        return None
    names = set(stored.tensors)
    return rule.class_name if names and all(n in rule.saved or rule.unloaded(n) for n in names) else None


def plan_merge(
    config: Any,
    out: str | Path,
    *,
    force: bool = False,
    allow_pickle: bool = False,
    dtype: str | None = None,
    into_existing: bool = False,
) -> MergeJob:
    """Steps 1-2: everything that can refuse a merge, before anything is written.

    ``into_existing``: OUT may be an existing directory that is not an input (plain
    mergekit-yaml writes into it).
    """
    from boom_merge.model_refs import check_model, reference_spec, resolve_model, transformer_dir
    from boom_merge.outputs import check_output
    from boom_merge.merge.st_head import plan_head

    validate_config(config)
    refs = tuple(ordered_references(config))
    models = tuple(resolve_model(reference_spec(ref.model)) for ref in refs)
    check_output(out, inputs=[m.path for m in models], force=force, into_existing=into_existing)
    files = [model_files(transformer_dir(m.path), allow_pickle=allow_pickle) for m in models]
    check_same_tensors(files)
    boom = _boom_kernels_only(config)
    for model in models:  # a BOOM kernel checks the weights it reads (no pass of its own)
        check_model(model.path, allow_pickle=allow_pickle, transformer_finite=not boom)
    config = _with_dtypes(config, output_dtype(models[0].path), dtype, kernel_widens=boom)
    head = plan_head(config, [m.path for m in models])
    return MergeJob(_for_mergekit(config, refs, models, files), refs, models, tuple(files), head)


def _boom_kernels_only(config: Any) -> bool:
    """Whether every tensor goes through a BOOM kernel: it refuses NaN/Inf input and widens each
    input to float32 one at a time as it reads it (so mergekit need not cast all M first)."""
    from boom_merge.merge.methods import BOOM_METHODS

    return config.merge_method in {m.spec.name for m in BOOM_METHODS} and not config.modules


# ---------------------------------------------------------------- 3. mergekit


def _non_finite_input(job: MergeJob, error: Any) -> BoomError:
    """The kernel's refusal as the one-line error the up-front check gave: the input's weight file
    holding the tensor (its directory when the name is not found), the tensor, the problem."""
    from boom_merge.model_refs import transformer_dir

    where: Path | None = None
    input_path = getattr(getattr(error.input_id, "model", None), "path", None)
    for model in job.models:
        if input_path is not None and Path(input_path).resolve() == Path(model.path).resolve():
            where = transformer_dir(Path(model.path))
            tensors = model_files(where).tensors
            name = error.tensor or ""
            info = tensors.get(name) or next((t for key, t in tensors.items()
                                              if name.endswith("." + key) or key.endswith("." + name)), None)
            where = info.file if info is not None else where
    return BoomError(f"tensor {error.tensor!r} contains NaN or Inf values", path=where or str(error.input_id))


def _mergekit(run: Callable[[], Any], job: MergeJob) -> Any:
    """Run mergekit; its many exception types become one line."""
    from boom_merge.merge.methods import NonFiniteInputError

    try:
        return run()
    except BoomError:
        raise
    except NonFiniteInputError as error:
        raise _non_finite_input(job, error) from None
    except Exception as error:  # noqa: BLE001
        logger.debug("mergekit failed", exc_info=True)
        text = str(error).strip()
        raise BoomError(f"merge failed: {text.splitlines()[0] if text else type(error).__name__}") from None


# ---------------------------------------------------------------- 4. finish


def finish_merge(job: MergeJob, out_dir: str | Path, *, recipe_text: str | None, title: str) -> None:
    """Make mergekit's output a sentence-transformers model with lineage and a card."""
    from boom_merge.card.build import write_model_card
    from boom_merge.lineage import write_lineage

    out_dir = Path(out_dir)
    _name_the_inputs_class(job, out_dir)
    if job.head is None:
        return  # plain transformers inputs: mergekit's output is complete
    job.head.write(out_dir)
    write_lineage(out_dir, job.head.config, list(job.refs))
    write_model_card(out_dir, inputs=[str(ref.model) for ref in job.refs], recipe_yaml=recipe_text,
                     method=job.config.merge_method, title=title)


def _name_the_inputs_class(job: MergeJob, out_dir: Path) -> None:
    """mergekit writes the class it read the inputs as (``override_architecture``) into the output's
    config; the output names the class its inputs name (Qwen3-Embedding's ``Qwen3ForCausalLM``)."""
    import json

    from boom_merge.model_refs import transformer_dir

    if not any(ref.override_architecture for ref in job.config.referenced_models()):
        return
    named = json.loads((transformer_dir(Path(job.models[0].path)) / "config.json").read_text(encoding="utf-8"))
    file = out_dir / "config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    config["architectures"] = named.get("architectures")
    file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- the pipeline


@contextlib.contextmanager
def _streaming(job: MergeJob) -> Iterator[None]:
    """Around one mergekit run: the inputs read ahead of it (:mod:`boom_merge.merge.read_ahead`) and the
    kernels' direction buffer reused (:func:`boom_merge.merge.methods.reusing_scratch`)."""
    from boom_merge.merge.methods import reusing_scratch
    from boom_merge.merge.read_ahead import reading_ahead

    with reading_ahead(job.files), reusing_scratch():
        yield


def _parameter_count(size: str) -> int:
    from mergekit.common import parse_kmb

    try:
        count = int(parse_kmb(size))
    except (ValueError, TypeError):
        count = 0
    if count <= 0:  # mergekit would take 0 as one unbounded shard
        raise BoomError(f"invalid shard size {size!r}; use a count such as 250M or 1B")
    return count


def run_recipe(
    config: Any,
    out: str | Path,
    *,
    recipe_text: str,
    force: bool = False,
    cuda: bool = False,
    allow_pickle: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
    extra_files: dict[str, str | bytes] | None = None,
    dtype: str | None = None,
) -> Path:
    """Merge into ``out`` atomically; ``extra_files`` (relative name -> text or bytes) are written beside the model.

    ``out_shard_size`` is mergekit's parameters per output shard (``"250M"``, ``"1B"``);
    ``dtype`` the output's dtype (default: the inputs').
    """
    from mergekit.options import MergeOptions

    from boom_merge.merge.mergekit_compat import fix_plan_tensor, treat_local_dirs_as_local, upstream_run_merge
    from boom_merge.outputs import atomic_output_dir

    fix_plan_tensor()  # what mergekit 0.1.5 needs, also with the import hook disabled
    treat_local_dirs_as_local()
    shard = _parameter_count(out_shard_size)
    job = plan_merge(config, out, force=force, allow_pickle=allow_pickle, dtype=dtype)
    # our card replaces mergekit's for sentence-transformers outputs
    options = MergeOptions(cuda=cuda, lazy_unpickle=allow_pickle, write_model_card=job.head is None,
                           out_shard_size=shard)
    with atomic_output_dir(out, force=force, inputs=[m.path for m in job.models]) as tmp:
        # written first so that the card (written after the merge) can describe them
        (tmp / RECIPE_FILE).write_text(recipe_text, encoding="utf-8")
        for name, content in (extra_files or {}).items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                (tmp / name).write_bytes(content)
            else:
                (tmp / name).write_text(content, encoding="utf-8")
        with _streaming(job):
            _mergekit(lambda: upstream_run_merge()(job.config, str(tmp), options=options,
                                                   config_source=recipe_text), job)
        finish_merge(job, tmp, recipe_text=recipe_text, title=Path(out).name)
    return Path(out)


def merge_recipe(
    recipe: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    cuda: bool = False,
    allow_pickle: bool = False,
    out_shard_size: str = DEFAULT_OUT_SHARD_SIZE,
    dtype: str | None = None,
) -> Path:
    """``boom-merge merge``: a mergekit recipe in, a sentence-transformers-correct model out."""
    config, text = load_recipe(recipe)
    return run_recipe(config, out, recipe_text=text, force=force, cuda=cuda, allow_pickle=allow_pickle,
                      out_shard_size=out_shard_size, dtype=dtype)


def merge_in_place(config: Any, out: str | Path, *, options: Any, config_source: str | None,
                   upstream: Callable[..., Any]) -> Any:
    """Plain ``mergekit-yaml`` (the wrapped ``run_merge``): the pipeline, with mergekit writing ``out``.

    An existing ``out`` that is not an input is written into, as mergekit does, under
    ``out``'s lock (:func:`boom_merge.outputs.output_lock`); pickled
    weights need ``BOOM_MERGE_ALLOW_PICKLE=1``. When the merge fails midway (a kernel refusing a
    NaN/Inf input, any mergekit error, an interrupt), what mergekit had written (shards flushed
    before) is removed: OUT itself if this run made it, else the entries it added; a failure is
    one line (:func:`_mergekit`).
    """
    from boom_merge.outputs import output_lock

    job = plan_merge(config, out, into_existing=True, allow_pickle=os.environ.get(ALLOW_PICKLE_ENV) == "1")
    with output_lock(out) as real:  # a second mergekit-yaml (or boom-merge) to the same OUT fails fast
        before = set(os.listdir(real)) if real.is_dir() else None
        earlier = _stale_candidates(real)
        started = time.time_ns()
        try:
            with _streaming(job):
                result = _mergekit(lambda: upstream(job.config, out, options, config_source), job)
        except BaseException:  # a refusal midway, an interrupt: what mergekit wrote goes
            _remove_added(real, before)
            raise
        _remove_stale(real, earlier)
        finish_merge(job, out, recipe_text=config_source, title=Path(out).name)
        _usual_modes(real, since=started)
    return result


#: files of an earlier model in OUT that a merge written in other files would leave beside it (an old single
#: ``model.safetensors`` is loaded before new shards; an old ``boom_recipe.yml`` is read before mergekit's copy)
_EARLIER_MODEL = re.compile(r"^((model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?|"
                            + re.escape(RECIPE_FILE) + ")$")


def _stale_candidates(out: Path) -> dict[str, tuple[int, int]]:
    """OUT's files of an earlier model, with what identifies their content (inode, modification time)."""
    found = {}
    for name in os.listdir(out) if out.is_dir() else ():
        path = out / name
        if _EARLIER_MODEL.match(name) and path.is_file() and not path.is_symlink():
            info = path.stat()
            found[name] = (info.st_ino, info.st_mtime_ns)
    return found


def _remove_stale(out: Path, earlier: dict[str, tuple[int, int]]) -> None:
    """After mergekit wrote into an existing OUT: remove the earlier model's files it did not rewrite."""
    stale = []
    for name, identity in earlier.items():
        path = out / name
        info = path.stat() if path.is_file() else None
        if info is not None and (info.st_ino, info.st_mtime_ns) == identity:
            stale.append(name)
            path.unlink()
    if stale:
        logger.warning("%s: removed %s, left by the model written there before (this merge wrote its weights in "
                       "other files)", out, ", ".join(sorted(stale)))


def _usual_modes(out: Path, *, since: int) -> None:
    """The umask's usual modes for the files this run wrote into OUT (safetensors 0.8 writes 600), as
    boom-merge's own outputs get them; OUT's other files keep theirs."""
    from boom_merge.durable import umask, usual_mode

    mask = umask()
    margin = 1_000_000_000  # a file system's clock may lag ours: a second
    for root, _, files in os.walk(out):
        for name in files:
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISREG(info.st_mode) and info.st_mtime_ns >= since - margin:
                os.chmod(os.path.join(root, name), usual_mode(info.st_mode, mask))


def _remove_added(out: Path, before: set[str] | None) -> None:
    """Remove what a failed run wrote into ``out``: all of it if it did not exist, else the new entries."""
    import shutil

    if not out.is_dir():
        return
    added = [out] if before is None else [out / name for name in set(os.listdir(out)) - before]
    for path in added:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
