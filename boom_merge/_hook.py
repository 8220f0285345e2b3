"""Lazy import hook that plugs boom-merge into an unmodified mergekit.

mergekit has no plugin entry point, so ``boom_merge_hook.pth`` (installed into
site-packages) imports this module at interpreter start-up. It only appends a finder
to ``sys.meta_path``; nothing heavy is imported until mergekit itself is. When a
watched mergekit module has finished executing, its callback runs:

* ``mergekit.merge_methods``: register ``boom`` and ``boom_incremental`` (doing this
  from inside ``mergekit.merge_methods.registry`` would be a circular import);
* ``mergekit.plan``, ``mergekit.card`` and ``mergekit.merge``: apply :mod:`boom_merge.mergekit_compat`.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.abc import Loader, MetaPathFinder
from importlib.machinery import ModuleSpec, PathFinder

# module -> "package.module:function" run once that module has been executed
_CALLBACKS = {
    "mergekit.merge_methods": "boom_merge.merge_methods:register_methods",
    "mergekit.plan": "boom_merge.mergekit_compat:apply_plan_fixes",
    "mergekit.card": "boom_merge.mergekit_compat:apply_card_fixes",
    "mergekit.merge": "boom_merge.mergekit_compat:apply_merge_fixes",
}


def _run_callback(target: str) -> None:
    module_name, function = _CALLBACKS[target].split(":")
    getattr(importlib.import_module(module_name), function)()


class _AfterExecLoader(Loader):
    """Delegates to the real loader, then runs the module's callback."""

    def __init__(self, loader: Loader, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec: ModuleSpec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _run_callback(self._name)

    def __getattr__(self, item: str):  # get_source, get_filename, ... for tracebacks
        return getattr(self._loader, item)


class _MergekitFinder(MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in _CALLBACKS:
            return None
        spec = PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _AfterExecLoader(spec.loader, fullname)
        return spec


def install() -> None:
    """Install the finder once; run callbacks for already-imported targets."""
    if not any(isinstance(finder, _MergekitFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MergekitFinder())
    for name in _CALLBACKS:
        if name in sys.modules and not isinstance(
            getattr(sys.modules[name], "__loader__", None), _AfterExecLoader
        ):
            _run_callback(name)


# BOOM_MERGE_DISABLE_HOOK=1 leaves mergekit untouched (tests use it to observe upstream).
if not os.environ.get("BOOM_MERGE_DISABLE_HOOK"):
    install()
