"""The .pth import hook: cheap at start-up, registers BOOM when mergekit loads."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


REPO_PTH = Path(__file__).resolve().parents[1] / "boom_merge_hook.pth"


def test_pth_file_is_installed_next_to_the_package() -> None:
    pth = Path(sysconfig.get_paths()["purelib"]) / "boom_merge_hook.pth"
    assert pth.read_text() == REPO_PTH.read_text()


def test_pth_line_is_silent_when_the_package_is_gone(tmp_path: Path) -> None:
    """A stale .pth (package removed, editable source deleted) must not print a traceback at every start-up."""
    line = REPO_PTH.read_text().strip()
    assert line.startswith("import ")  # site only executes .pth lines that start with "import"
    gone = subprocess.run([sys.executable, "-I", "-S", "-c", f"{line}\nimport sys; print('boom_merge._hook' in sys.modules)"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert (gone.returncode, gone.stdout.strip(), gone.stderr) == (0, "False", "")
    assert _python(f"{line}\nimport sys; print('boom_merge._hook' in sys.modules)") == "True"


def test_startup_imports_neither_torch_nor_mergekit() -> None:
    out = _python("import sys; print(sorted(m for m in ('torch', 'mergekit', 'boom_merge._hook') if m in sys.modules))")
    assert out == "['boom_merge._hook']"


def test_the_hook_imports_nothing_but_itself() -> None:
    """Every Python start of the environment pays for what the .pth line imports (importlib.abc was ~30 ms)."""
    root = str(REPO_PTH.parent)
    out = _python_isolated(f"import os, sys; sys.path.insert(0, {root!r}); before = set(sys.modules); "
                           f"{REPO_PTH.read_text().strip()}; print(sorted(set(sys.modules) - before))")
    assert out == "['boom_merge', 'boom_merge._hook']"


def _python_isolated(code: str) -> str:
    """A fresh interpreter without site (no other .pth file imports anything first)."""
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_failing_callback_warns_once_and_leaves_mergekit_as_it_was() -> None:
    result = subprocess.run([sys.executable, "-c", (
        "import boom_merge._hook as hook; "
        "hook._CALLBACKS['mergekit.plan'] = 'boom_merge.merge.mergekit_compat:no_such_fix'; "
        "import mergekit.plan as plan; "
        "print(getattr(plan.MergePlanner.plan_tensor, '__boom_merge_patched__', False))")],
        capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr
    warnings = [line for line in result.stderr.splitlines() if "boom-merge" in line]
    assert len(warnings) == 1 and "mergekit left as it was" in warnings[0], result.stderr
    assert "Traceback" not in result.stderr


def test_importing_mergekit_registers_boom_methods() -> None:
    out = _python(
        "from mergekit.merge_methods import registered_methods; "
        "print(sorted(m.spec.name for m in registered_methods() if m.spec.name.startswith('boom')))"
    )
    assert out == "['boom', 'boom_incremental']"


def test_importing_the_registry_submodule_first_works_too() -> None:
    out = _python(
        "import mergekit.merge_methods.registry as r; import mergekit.plan as p; "
        "print(r.get('boom').spec.name, getattr(p.MergePlanner.plan_tensor, '__boom_merge_patched__', False))"
    )
    assert out == "boom True"


def test_importing_the_kernels_first_works() -> None:
    """boom_merge.merge.methods imports mergekit.merge_methods, whose callback registers it: no circle."""
    out = _python("from boom_merge.merge.methods import boom_merge; from mergekit.merge_methods import get; "
                  "print(get('boom') is boom_merge)")
    assert out == "True"


_REGISTERED_ONCE = (
    "import importlib, boom_merge.merge.methods as bm, mergekit.merge_methods as mm; "
    "bm.register_methods(); bm.register_methods(); "  # again, after whatever the import order did
    "from mergekit.merge_methods import registered_methods; "
    "names = [m.spec.name for m in registered_methods()]; "
    "print(names.count('boom'), names.count('boom_incremental'), mm.get('boom').spec.name)"
)


@pytest.mark.parametrize(("first", "hook"), [
    ("import sentence_transformers.base.merging; import mergekit.merge_methods; import boom_merge", True),
    ("import boom_merge.merge.methods; import sentence_transformers.base.merging; import mergekit.merge_methods", True),
    ("from sentence_transformers import SentenceTransformer; import boom_merge.merge.pipeline", True),
    ("import mergekit.merge_methods; import boom_merge.merge.methods as m; m.register_methods(); m.register_methods()",
     True),
    ("import sentence_transformers.base.merging; import boom_merge.merge.methods as m; m.register_methods()", False),
])
def test_registering_twice_is_harmless_in_any_import_order(first: str, hook: bool) -> None:
    """mergekit 0.1.5's ``register`` raises on a duplicate name: every order registers BOOM exactly once
    (also with the hook off, where recipe validation registers them through ``register_methods``)."""
    env = {key: value for key, value in os.environ.items() if key != "BOOM_MERGE_DISABLE_HOOK"}
    if not hook:
        env["BOOM_MERGE_DISABLE_HOOK"] = "1"
    result = subprocess.run([sys.executable, "-c", f"{first}; {_REGISTERED_ONCE}"], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "1 1 boom"


_EACH_MODULE_ALONE = """
import os, pkgutil, sys
import boom_merge
names = sorted(m.name for m in pkgutil.walk_packages(boom_merge.__path__, "boom_merge.") if m.name != "boom_merge.cli.__main__")
for heavy in ("torch", "transformers", "sentence_transformers", "numpy", "click", "yaml", "pydantic", "safetensors"):
    __import__(heavy)  # third-party only: neither mergekit nor any boom_merge module but the package
for name in list(sys.modules):
    if name.startswith("boom_merge.") and name != "boom_merge._hook":
        del sys.modules[name]
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:  # a fresh child imports just this one module first
        try:
            __import__(name)
        except BaseException as error:
            print(f"{name}: {type(error).__name__}: {error}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if status:
        failed.append(name)
print("FAILED", failed, len(names))
"""


def test_every_module_imports_on_its_own() -> None:
    """Each module as the first boom_merge module of an interpreter (forked after the heavy third-party imports)."""
    result = subprocess.run([sys.executable, "-c", _EACH_MODULE_ALONE], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("FAILED [] "), result.stdout[-3000:]
    assert int(last.split()[-1]) > 30  # the walk found the package's modules
