"""kmock.compiled: the hot modules run compiled; a source newer than its build, or
KMOCK_PURE_PYTHON=1, runs the .py instead (with a warning for the stale build)."""

import os
import re
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from kmock import compiled

PURE = compiled.pure_requested()
EXT = sysconfig.get_config_var("EXT_SUFFIX")


@pytest.mark.skipif(PURE, reason="this run selects the interpreted modules on purpose")
@pytest.mark.parametrize("name", ["kmock.kernel", "kmock.kvm.vm", "kmock.kvm.guest_memfd",
                                  "kmock.iommufd.ioas", "kmock.preload.server",
                                  "kmock_tdx.sept", "kmock_snp.rmp", "kmock_cca.rtt"])
def test_hot_modules_run_compiled(name):
    """What setup.py compiles is what runs (a failure here means a stale build: rebuild with
    `python3 -m pip install -e .`)."""
    __import__(name)
    assert sys.modules[name].__file__.endswith(EXT)
    assert name in compiled.status()["compiled"]


def test_cold_modules_stay_interpreted():
    import kmock.cli
    import kmock_tdx.demo

    assert kmock.cli.__file__.endswith(".py")
    assert kmock_tdx.demo.__file__.endswith(".py")


def test_source_of_and_is_stale(tmp_path):
    so = tmp_path / f"mod{EXT}"
    src = tmp_path / "mod.py"
    so.write_bytes(b"")
    assert compiled.source_of(str(so)) is None  # no .py beside it: nothing to choose
    src.write_text("")
    assert compiled.source_of(str(so)) == str(src)
    os.utime(src, ns=(1_000_000_000, 1_000_000_000))
    os.utime(so, ns=(2_000_000_000, 2_000_000_000))
    assert not compiled.is_stale(str(so), str(src))
    os.utime(src, ns=(3_000_000_000, 3_000_000_000))
    assert compiled.is_stale(str(so), str(src))
    assert compiled.is_stale(str(so), str(tmp_path / "gone.py"))  # unreadable: the source


_EXT_C = textwrap.dedent("""
    #include <Python.h>
    static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "mod", NULL, -1, NULL};
    PyMODINIT_FUNC PyInit_mod(void) {
        PyObject *m = PyModule_Create(&def);
        if (m) PyModule_AddStringConstant(m, "X", "compiled");
        return m;
    }
""")


@pytest.fixture
def fake_package(tmp_path):
    """A package kmock_compiled_fake with mod.py (X = "source") and a real extension module
    mod<EXT_SUFFIX> built from C (X = "compiled")."""
    pkg = tmp_path / "kmock_compiled_fake"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text('X = "source"\n')
    (tmp_path / "mod.c").write_text(_EXT_C)
    cc = subprocess.run(
        ["cc", "-shared", "-fPIC", f"-I{sysconfig.get_paths()['include']}",
         str(tmp_path / "mod.c"), "-o", str(pkg / f"mod{EXT}")], capture_output=True, text=True)
    if cc.returncode != 0:
        pytest.skip(f"no C compiler for the fake extension: {cc.stderr[:200]}")
    os.utime(pkg / "mod.py", ns=(1_000_000_000, 1_000_000_000))
    return tmp_path


def _import_fake(root, pure=False):
    env = dict(os.environ)
    env.pop("KMOCK_PURE_PYTHON", None)
    if pure:
        env["KMOCK_PURE_PYTHON"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(root), env.get("PYTHONPATH", "")])
    code = ("import warnings; warnings.simplefilter('always'); import kmock; "
            "from kmock import compiled; import kmock_compiled_fake.mod as m; "
            "s = compiled.status(); name = 'kmock_compiled_fake.mod'; "
            "print(m.X, [k for k in s if name in s[k]][0])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split(), out.stderr


def test_a_fresh_build_runs_compiled(fake_package):
    (x, how), err = _import_fake(fake_package)
    assert (x, how) == ("compiled", "compiled") and "RuntimeWarning" not in err


def test_a_source_newer_than_its_build_runs_interpreted_with_a_warning(fake_package):
    os.utime(fake_package / "kmock_compiled_fake" / "mod.py")  # edited after the build
    (x, how), err = _import_fake(fake_package)
    assert (x, how) == ("source", "stale")
    assert "RuntimeWarning" in err and "mod.py is newer than its compiled module" in err
    assert "pip install -e ." in err


def _old(path):
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))


def test_a_pxd_newer_than_its_build_runs_interpreted(fake_package):
    """A module's augmenting .pxd (its cdef class layout) is part of its build too."""
    pxd = fake_package / "kmock_compiled_fake" / "mod.pxd"
    pxd.write_text("cdef class C:\n    cdef public object x\n")
    _old(pxd)
    assert _import_fake(fake_package)[0] == ["compiled", "compiled"]
    os.utime(pxd)  # edited after the build
    assert _import_fake(fake_package)[0] == ["source", "stale"]


def test_a_module_whose_cimported_module_runs_interpreted_runs_interpreted(fake_package):
    """A compiled module checks the layout of the classes it cimports when it loads: with
    the other module interpreted (stale), it would not load, so it runs interpreted too."""
    pkg = fake_package / "kmock_compiled_fake"
    (pkg / "mod.pxd").write_text("from kmock_compiled_fake.dep cimport D\n")
    (pkg / "dep.py").write_text("class D:\n    pass\n")
    (pkg / f"dep{EXT}").write_bytes(b"")  # (never imported: only its date is read)
    for f in ("mod.pxd", "dep.py"):
        _old(pkg / f)
    assert _import_fake(fake_package)[0] == ["compiled", "compiled"]
    os.utime(pkg / "dep.py")  # dep edited after the build
    assert _import_fake(fake_package)[0] == ["source", "stale"]
    _old(pkg / "dep.py")
    (pkg / "dep.pxd").write_text("cdef class D:\n    cdef public object x, y\n")
    _old(pkg / "dep.pxd")
    assert _import_fake(fake_package)[0] == ["compiled", "compiled"]
    # dep's layout changed and dep was rebuilt, mod was not: mod was built against the
    # old layout (its reads of D's members would land on the wrong fields)
    os.utime(pkg / "dep.pxd")
    os.utime(pkg / f"dep{EXT}")
    assert _import_fake(fake_package)[0] == ["source", "stale"]
    _old(pkg / "dep.pxd")
    (pkg / f"dep{EXT}").unlink()  # dep not built at all
    assert _import_fake(fake_package)[0] == ["source", "stale"]


def test_a_cimport_cycle_is_decided_as_a_whole(fake_package, monkeypatch):
    """mod <-> b cimport each other and b cimports a stale c: neither mod nor b may run
    compiled, whichever is asked first (a provisional answer inside the cycle once let the
    first one through)."""
    pkg = fake_package / "kmock_compiled_fake"
    (pkg / "mod.pxd").write_text("from kmock_compiled_fake.b cimport B\n")
    (pkg / "b.pxd").write_text("from kmock_compiled_fake.mod cimport M\n"
                               "from kmock_compiled_fake.c cimport C\n")
    (pkg / "c.pxd").write_text("cdef class C:\n    pass\n")
    for name in ("b", "c"):
        (pkg / f"{name}.py").write_text("")
        (pkg / f"{name}{EXT}").write_bytes(b"")
    for f in ("mod.pxd", "b.pxd", "c.pxd", "b.py", "c.py"):
        _old(pkg / f)
    os.utime(pkg / "c.py")  # c edited after its build
    monkeypatch.syspath_prepend(str(fake_package))
    monkeypatch.delitem(sys.modules, "kmock_compiled_fake", raising=False)  # (restored after)
    paths = {n: (str(pkg / f"{n}{EXT}"), str(pkg / f"{n}.py")) for n in ("mod", "b", "c")}
    for order in (("b", "mod"), ("mod", "b")):
        finder = compiled._Finder()
        got = {n: finder._usable(f"kmock_compiled_fake.{n}", *paths[n]) for n in order}
        assert got == {"b": False, "mod": False}, order
    os.utime(pkg / "c.py", ns=(1_000_000_000, 1_000_000_000))  # c current again
    finder = compiled._Finder()
    assert finder._usable("kmock_compiled_fake.b", *paths["b"])
    assert finder._usable("kmock_compiled_fake.mod", *paths["mod"])


def test_cimported_reads_the_pxd(tmp_path):
    (tmp_path / "a.py").write_text("")
    assert compiled.cimported(str(tmp_path / "a.py")) == []  # no .pxd
    (tmp_path / "a.pxd").write_text(
        "cimport cython\nfrom kmock.kvm.vm cimport VM\ncimport kmock_x.y\n"
        "from libc.stdint cimport uint64_t\n")
    assert compiled.cimported(str(tmp_path / "a.py")) == ["kmock.kvm.vm", "kmock_x.y"]


def test_pure_python_runs_the_source(fake_package):
    (x, how), err = _import_fake(fake_package, pure=True)
    assert (x, how) == ("source", "pure") and "RuntimeWarning" not in err


def test_summary_names_what_runs():
    line = compiled.summary()
    s = compiled.status()
    if PURE:
        assert "KMOCK_PURE_PYTHON=1" in line and not s["compiled"]
    else:
        assert line.startswith(f"compiled modules: {len(s['compiled'])} of ")


def test_no_compiled_module_holds_a_hookimpl():
    """pluggy (1.7 and later) discovers only plain Python functions as hook
    implementations: a compiled ``@hookimpl`` would be silently ignored (it was: the core's
    own plugin lost its platforms). setup.py's HOT list must leave such modules out."""
    import glob

    import kmock

    root = os.path.dirname(os.path.dirname(kmock.__file__))
    built = glob.glob(os.path.join(root, "kmock", "**", f"*{EXT}"), recursive=True)
    built += glob.glob(os.path.join(root, "plugins", "kmock_*", f"*{EXT}"))
    sources = [s for s in map(compiled.source_of, built) if s is not None]
    if not sources:
        pytest.skip("no module compiled from its .py in this tree")
    decorator = re.compile(r"^\s*@\s*(\w+\.)*hookimpl\b", re.M)
    with_hooks = [s for s in sources if decorator.search(open(s).read())]
    assert with_hooks == []
