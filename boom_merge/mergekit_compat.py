"""The one place where boom-merge adapts mergekit 0.1.5. Each fix here is temporary.

1. ``MergePlanner.plan_tensor`` evaluates ``[w_in.name] + (w_in.aliases or [])`` for
   optional weights; ``aliases`` is a tuple, so every BERT-family model (whose
   optional pooler weights have aliases) crashes with ``TypeError: can only
   concatenate list (not "tuple") to list``. We recompile that method from its own
   source with the expression fixed. If upstream changes the line, nothing is
   patched and ``tests/test_mergekit_compat.py`` fails, telling us to drop the shim.
2. mergekit writes only the transformer. ``run_merge`` is wrapped so that when all
   inputs are sentence-transformers models the output becomes one too
   (:func:`boom_merge.st_head.finish_output`): plain ``mergekit-yaml`` then yields a
   model that ``SentenceTransformer(OUT)`` loads and that embeds as intended.

3. mergekit's model card asks the Hub whether a local directory whose path has at
   most one slash (``members/m0``) is also a Hub repo; offline that raises a
   connection error after the merge is done. A path that is a local directory is
   treated as local.

All are applied by the import hook (``_hook.py``) right after mergekit's module
has been executed, and are idempotent.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import textwrap
from typing import Any, Callable

logger = logging.getLogger(__name__)

BUGGY_ALIAS_EXPR = "[w_in.name] + (w_in.aliases or [])"
FIXED_ALIAS_EXPR = "[w_in.name, *(w_in.aliases or ())]"
_PATCHED = "__boom_merge_patched__"


def plan_tensor_has_alias_bug() -> bool:
    """True while mergekit's own ``plan_tensor`` source still has the list+tuple bug."""
    from mergekit.plan import MergePlanner

    original = getattr(MergePlanner.plan_tensor, "__wrapped__", MergePlanner.plan_tensor)
    return BUGGY_ALIAS_EXPR in inspect.getsource(original)


def patch_plan_tensor() -> bool:
    """Replace ``MergePlanner.plan_tensor`` with its source, fixed; return whether patched."""
    import mergekit.plan as plan

    current = plan.MergePlanner.plan_tensor
    if getattr(current, _PATCHED, False):
        return True
    if not plan_tensor_has_alias_bug():
        logger.info("mergekit's plan_tensor no longer has the alias bug; not patching")
        return False
    source = textwrap.dedent(inspect.getsource(current)).replace(
        BUGGY_ALIAS_EXPR, FIXED_ALIAS_EXPR
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, inspect.getsourcefile(current) or "<mergekit.plan>", "exec"),
         vars(plan), namespace)
    fixed = functools.wraps(current)(namespace["plan_tensor"])
    setattr(fixed, _PATCHED, True)
    plan.MergePlanner.plan_tensor = fixed
    return True


def wrap_run_merge() -> None:
    """Make ``mergekit.merge.run_merge`` finish sentence-transformers outputs."""
    import mergekit.merge as merge

    if getattr(merge.run_merge, _PATCHED, False):
        return
    merge.run_merge = _with_sentence_transformers_output(merge.run_merge)


def _with_sentence_transformers_output(run_merge: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(run_merge)
    def run_merge_with_st(merge_config, out_path, *args, **kwargs):
        from boom_merge.st_head import finish_output, plan_head

        head = plan_head(merge_config)  # refuse incompatible inputs before merging
        result = run_merge(merge_config, out_path, *args, **kwargs)
        if head is not None:
            finish_output(head, out_path, recipe_yaml=kwargs.get("config_source"))
        return result

    setattr(run_merge_with_st, _PATCHED, True)
    return run_merge_with_st


def treat_local_dirs_as_local() -> None:
    """Wrap ``mergekit.card.is_hf`` so that existing local directories never query the Hub."""
    import mergekit.card as card

    if getattr(card.is_hf, _PATCHED, False):
        return
    original = card.is_hf

    @functools.wraps(original)
    def is_hf(path: str) -> bool:
        return False if os.path.isdir(path) else original(path)

    setattr(is_hf, _PATCHED, True)
    card.is_hf = is_hf


def apply_card_fixes() -> None:
    """Callback for ``mergekit.card``."""
    treat_local_dirs_as_local()


def apply_plan_fixes() -> None:
    """Callback for ``mergekit.plan``."""
    patch_plan_tensor()


def apply_merge_fixes() -> None:
    """Callback for ``mergekit.merge``."""
    wrap_run_merge()


def ensure_applied() -> None:
    """Apply everything now (for in-process callers that bypass the ``.pth`` hook)."""
    from boom_merge.merge_methods import register_methods

    register_methods()
    patch_plan_tensor()
    treat_local_dirs_as_local()
    wrap_run_merge()
