"""Which of kmock's modules run compiled, and the rule that keeps a stale build harmless.

``pip install -e .`` compiles kmock's hot modules (the ioctl dispatch, KVM, guest_memfd,
iommufd, the preload server) and the architecture plugins with Cython, from their own
``.py`` files (setup.py lists them). The ``.py`` stays the only source: the compiled module
is the same code without the interpreter's per-bytecode cost, and the tests run on both.

Python imports an extension module in preference to the ``.py`` beside it. So that an
edited source never runs as its old compiled self, the finder installed here (by
``import kmock``, before any of its modules load) imports the ``.py`` instead when

* ``KMOCK_PURE_PYTHON=1`` is set (the pure run: the interpreted modules and the
  pure-Python twin of the memory core, kmock.mm), or
* the ``.py`` was modified after Cython read it for the build (a stale build, e.g. after
  an edit, also one made while the build ran, or a ``git checkout``; setup.py dates each
  compiled module with its source's modification time as Cython read it): one
  RuntimeWarning names the modules; rebuild with ``python3 -m pip install -e .``.

Some modules have a ``.pxd`` beside the ``.py`` (an augmenting declaration file: their hot
classes become cdef classes with typed fields when compiled). A compiled module whose
``.pxd`` cimports another module's class needs that module compiled too (Cython checks
the class's layout when the module loads). So a module also runs interpreted when its
``.pxd`` changed after the build, or when a module it cimports runs interpreted.

It applies to the packages setup.py compiles (``kmock`` and the ``kmock_*`` plugins), and
only to an extension module that has a ``.py`` of the same name beside it (the memory
core ``kmock.mm._core``, built from csrc_cython/, has none and is never replaced).

``status()`` says what the process runs: the benchmarks print it, since their figures
differ between the two.
"""

import importlib.machinery
import importlib.util
import os
import re
import sys
import warnings

_PACKAGES = ("kmock", "kmock_")


def pure_requested():
    """True when ``KMOCK_PURE_PYTHON`` asks for the interpreted modules and the twin."""
    return os.environ.get("KMOCK_PURE_PYTHON", "") not in ("", "0")


def source_of(extension_path):
    """The ``.py`` beside a compiled module (``vm.cpython-311-x86_64-linux-gnu.so`` ->
    ``vm.py``), or None when there is none."""
    directory, name = os.path.split(extension_path)
    source = os.path.join(directory, name.split(".", 1)[0] + ".py")
    return source if os.path.exists(source) else None


def is_stale(extension_path, source_path):
    """Was the source (or its .pxd) modified after the compiled module was built?"""
    try:
        built = os.stat(extension_path).st_mtime_ns
        if os.stat(source_path).st_mtime_ns > built:
            return True
        pxd = source_path[:-3] + ".pxd"
        return os.path.exists(pxd) and os.stat(pxd).st_mtime_ns > built
    except OSError:
        return True  # unreadable: take the source, which is what would run without a build


def _newer(path, than):
    """Whether ``path`` exists and was modified after ``than`` (or ``than`` is gone)."""
    try:
        return os.stat(path).st_mtime_ns > os.stat(than).st_mtime_ns
    except FileNotFoundError:
        return not os.path.exists(than)


_CIMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+cimport|cimport\s+([\w.]+))", re.M)


def cimported(source_path):
    """The modules of this project that the .pxd beside ``source_path`` cimports."""
    pxd = source_path[:-3] + ".pxd"
    try:
        with open(pxd) as f:
            text = f.read()
    except OSError:
        return []
    names = (a or b for a, b in _CIMPORT.findall(text))
    return [n for n in names if n.startswith(_PACKAGES)]


def _module_files(name):
    """(compiled module path or None, .py path or None) of module ``name``, found from
    its top-level package's directory (imported if needed)."""
    top, _, rest = name.partition(".")
    try:
        package = sys.modules.get(top) or importlib.import_module(top)
    except ImportError:
        return None, None
    base = os.path.join(os.path.dirname(package.__file__), *rest.split("."))
    ext = next((base + sfx for sfx in importlib.machinery.EXTENSION_SUFFIXES
                if os.path.exists(base + sfx)), None)
    return ext, (base + ".py" if os.path.exists(base + ".py") else None)


class _Finder:
    """A sys.meta_path finder: the ``.py`` instead of a compiled module that is stale or
    not wanted (see the module docstring)."""

    def __init__(self):
        self.compiled = set()  # module names imported compiled
        self.interpreted = {}  # module name -> "pure" or "stale"
        self._warned = False
        self._usable_memo = {}

    def _usable(self, name, extension_path, source):
        """Whether the compiled module is current, and so is every module its .pxd
        cimports (transitively), each built after the .pxd files it cimports last changed.

        Decided for the whole cimport closure at once (a fixed point: cimports form
        cycles, e.g. kmock.kvm.vm and kmock.kvm.memslot), so that a compiled module never
        loads beside an interpreted one it cimports: Cython's load-time check refuses only
        a smaller class, and a stale build would read the wrong fields."""
        memo = self._usable_memo
        if name in memo:
            return memo[name]
        files = {name: (extension_path, source)}  # the closure: name -> (build, source)
        todo = [name]
        while todo:
            for dep in cimported(files[todo.pop()][1]):
                if dep not in files:
                    files[dep] = _module_files(dep)
                    if None not in files[dep]:
                        todo.append(dep)
        deps = {n: cimported(src) if src else [] for n, (_, src) in files.items()}
        ok = {}
        for n, (ext, src) in files.items():
            ok[n] = ext is not None and (src is None or not is_stale(ext, src) and not any(
                files[d][1] and _newer(files[d][1][:-3] + ".pxd", ext) for d in deps[n]))
        changed = True
        while changed:
            changed = False
            for n in files:
                if ok[n] and not all(ok[d] for d in deps[n]):
                    ok[n] = False
                    changed = True
        for n in files:
            memo.setdefault(n, ok[n])
        return memo[name]

    def find_spec(self, name, path=None, target=None):
        if not name.startswith(_PACKAGES):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None:
            return None
        if _patcher_active() and name.partition(".")[0] == "kmock":
            spec = self._choose(name, spec)
            spec.loader = _RealOsLoader(spec.loader)
            return spec
        if not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return None  # a .py module or a package: the usual import
        return self._choose(name, spec)

    def _choose(self, name, spec):
        """``spec`` of a compiled module, or of its .py (stale, or not wanted)."""
        if not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return spec
        source = source_of(spec.origin)
        if source is None:
            return spec  # compiled only (the memory core): nothing to choose
        if pure_requested():
            reason = "pure"
        elif not self._usable(name, spec.origin, source):
            reason = "stale"
        else:
            self.compiled.add(name)
            return spec
        self.interpreted[name] = reason
        if reason == "stale" and not self._warned:
            self._warned = True
            warnings.warn(
                f"kmock: {source} is newer than its compiled module; it runs interpreted "
                "(and so does every other such module). Rebuild with "
                "`python3 -m pip install -e .`", RuntimeWarning, stacklevel=2)
        return importlib.util.spec_from_file_location(name, source)


def _patcher_active():
    # (getattr: the patcher module itself may be importing, partly initialised)
    active = getattr(sys.modules.get("kmock.testing.patcher"), "active_patchers", None)
    return active is not None and bool(active())


class _RealOsLoader:
    """A kmock module imported while kmock.testing's patcher is active: its loader, then
    kmock.testing.patcher.restore_real on the module, so that it keeps the real os, fcntl
    and mmap rather than the patcher's copies then in ``sys.modules``."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        sys.modules["kmock.testing.patcher"].restore_real(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def install():
    """Put the finder first on sys.meta_path (once)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


def status():
    """{"compiled": [...], "pure": [...], "stale": [...]}: the module names imported so
    far, by how they run."""
    finder = next((f for f in sys.meta_path if isinstance(f, _Finder)), None)
    out = {"compiled": [], "pure": [], "stale": []}
    if finder is not None:
        out["compiled"] = sorted(finder.compiled)
        for name, reason in sorted(finder.interpreted.items()):
            out[reason].append(name)
    return out


def summary():
    """One line for a benchmark's header: how many of the imported modules run compiled."""
    s = status()
    n = len(s["compiled"]) + len(s["pure"]) + len(s["stale"])
    if not n:
        return "compiled modules: none built (interpreted)"
    line = f"compiled modules: {len(s['compiled'])} of {n}"
    if s["pure"]:
        line += " (KMOCK_PURE_PYTHON=1: interpreted)"
    if s["stale"]:
        line += f"; stale, interpreted: {', '.join(s['stale'])}"
    return line
