"""The default import gives the compiled core; KMOCK_PURE_PYTHON=1 gives the twin."""

import os
import subprocess
import sys

import pytest

import kmock.mm as mm

from _mm_impls import PURE_ENV


@pytest.mark.skipif(PURE_ENV, reason="this run selects the pure twin on purpose")
def test_default_import_is_compiled():
    assert mm.IMPLEMENTATION == "compiled"
    assert mm.RangeMap.__module__ == "kmock.mm._core"
    assert mm.PageTable.__module__ == "kmock.mm._core"
    assert mm.FrameAllocator.__module__ == "kmock.mm._core"


@pytest.mark.skipif(not PURE_ENV, reason="only in a KMOCK_PURE_PYTHON=1 run")
def test_env_import_is_pure_in_this_run():
    assert mm.IMPLEMENTATION == "pure"
    assert mm.RangeMap is mm.PyRangeMap


def _child(env_value):
    env = dict(os.environ)
    env.pop("KMOCK_PURE_PYTHON", None)
    if env_value is not None:
        env["KMOCK_PURE_PYTHON"] = env_value
    code = (
        "import kmock.mm as m; "
        "print(m.IMPLEMENTATION, m.RangeMap.__module__, m.PageTable.__module__, "
        "m.FrameAllocator.__module__, m.PyRangeMap.__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_subprocess_pure_env_gives_twin():
    impl, *mods = _child("1")
    assert impl == "pure"
    assert mods == ["kmock.mm._pure"] * 4


@pytest.mark.skipif(PURE_ENV, reason="this run may have no compiled core")
def test_subprocess_default_gives_compiled():
    impl, *mods = _child(None)
    assert impl == "compiled"
    assert mods == ["kmock.mm._core"] * 3 + ["kmock.mm._pure"]


def test_pure_twins_always_exported():
    from kmock.mm import _pure

    assert mm.PyRangeMap is _pure.RangeMap
    assert mm.PyPageTable is _pure.PageTable
    assert mm.PyFrameAllocator is _pure.FrameAllocator


@pytest.mark.skipif(PURE_ENV, reason="this run may have no compiled core")
def test_missing_compiled_core_fails_loudly(tmp_path):
    # A copy of the package without the extension: import must raise, not fall back.
    import shutil

    import kmock

    pkg = tmp_path / "kmock"
    shutil.copytree(os.path.dirname(kmock.__file__), pkg,
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    env = dict(os.environ)
    env.pop("KMOCK_PURE_PYTHON", None)
    env["PYTHONPATH"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", "import kmock.mm"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert "compiled core" in out.stderr
