"""The .pth import hook: cheap at start-up, registers BOOM when mergekit loads."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path


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
