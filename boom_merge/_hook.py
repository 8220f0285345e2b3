"""Lazy import hook that plugs boom-merge into an unmodified mergekit.

Owns: the start-up finder and the one table of watched modules and their callbacks
(``_CALLBACKS``). It may not patch mergekit or register methods itself
(:mod:`boom_merge.merge.mergekit_compat`, :mod:`boom_merge.mergekit_yaml` and
:mod:`boom_merge.merge.methods` do), and it never imports
anything at start-up.

mergekit has no plugin entry point, so ``boom_merge_hook.pth`` (installed into
site-packages) imports this module at interpreter start-up. It only puts a finder in
front of ``sys.meta_path``; it imports nothing itself (not even ``importlib``: every
Python program of the environment pays for what this module imports). When a watched
module has finished executing, its callback runs:

* ``mergekit.merge_methods`` and ``boom_merge.merge.methods``: register ``boom`` and
  ``boom_incremental`` (whichever finishes last; registering from inside
  ``mergekit.merge_methods`` while ``boom_merge.merge.methods`` is still importing it
  would be a circular import);
* ``mergekit.plan``, ``mergekit.card``: apply :mod:`boom_merge.merge.mergekit_compat`'s fixes;
* ``mergekit.merge``, ``mergekit.options``: route plain ``mergekit-yaml`` through the merge
  pipeline (:mod:`boom_merge.mergekit_yaml`).

Every callback is guarded: one that fails logs one warning and leaves mergekit as it
was. This module owns nothing else; what the callbacks do lives in their modules.
"""

import os
import sys

_METHODS = "boom_merge.merge.methods"
# module -> "package.module:function" run once that module has been executed
_CALLBACKS = {
    "mergekit.merge_methods": f"{_METHODS}:register_methods",
    _METHODS: f"{_METHODS}:register_methods",
    "mergekit.plan": "boom_merge.merge.mergekit_compat:fix_plan_tensor",
    "mergekit.card": "boom_merge.merge.mergekit_compat:treat_local_dirs_as_local",
    "mergekit.merge": "boom_merge.mergekit_yaml:route_run_merge",
    "mergekit.options": "boom_merge.mergekit_yaml:guard_merge_commands",
}


def _initializing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def _run_callback(target: str) -> None:
    """Run ``target``'s callback; on any failure log one warning and carry on."""
    module_name, function = _CALLBACKS[target].split(":")
    if target != module_name and module_name in _CALLBACKS and _initializing(module_name):
        return  # its own after-exec callback runs it once the module is complete
    try:
        __import__(module_name)
        getattr(sys.modules[module_name], function)()
    except Exception as error:  # a broken callback must never break the importing program
        import logging

        logging.getLogger(__name__).warning(
            "boom-merge: %s for %s failed (%s: %s); mergekit left as it was",
            function, target, type(error).__name__, error,
        )


class _AfterExecLoader:
    """Delegates to the real loader, then runs the module's callback."""

    def __init__(self, loader, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _run_callback(self._name)

    def __getattr__(self, item: str):  # get_source, get_code, get_filename, ... for tracebacks and runpy
        return getattr(self._loader, item)


class _MergekitFinder:
    """A duck-typed meta path finder (``importlib.abc`` would cost every interpreter ~30 ms)."""

    def __init__(self) -> None:
        self._searching: set[str] = set()

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in _CALLBACKS or fullname in self._searching:
            return None
        self._searching.add(fullname)
        try:
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self._searching.discard(fullname)
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _AfterExecLoader(spec.loader, fullname)
        return spec


def install() -> None:
    """Install the finder once; run callbacks for already-imported targets."""
    if not any(isinstance(finder, _MergekitFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _MergekitFinder())
    for name in _CALLBACKS:
        if name in sys.modules and not isinstance(getattr(sys.modules[name], "__loader__", None), _AfterExecLoader):
            _run_callback(name)


# BOOM_MERGE_DISABLE_HOOK=1 leaves mergekit untouched (tests use it to observe upstream).
if not os.environ.get("BOOM_MERGE_DISABLE_HOOK"):
    install()
