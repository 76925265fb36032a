"""Build kmock's compiled parts; everything else is in pyproject.toml (this file exists only
because extensions need ext_modules).

* the memory core (csrc_cython/_core.pyx) as kmock.mm._core (its declarations, which the
  hot modules' .pxd files cimport, are kmock/mm/_core.pxd), and the patcher's hot fd
  calls (csrc_cython/_patch.pyx) as kmock.testing._patch, and IOAS_MAP_FILE's fstat
  (csrc_cython/_fstat.pyx) as kmock._fstat;
* the hot Python modules, compiled by Cython from their own .py files (HOT below): the
  ioctl dispatch, KVM, guest_memfd, iommufd, the preload server and the architecture
  plugins. The .py stays the source; kmock.compiled runs it interpreted when it is newer
  than its build or with KMOCK_PURE_PYTHON=1. Their generated C goes to build/cython/.
  A .pxd beside a .py (an augmenting declaration file) makes its hottest classes cdef
  classes with typed fields when compiled, and may type a function's locals; the .py
  runs unchanged when interpreted.
* the server's side of the native tier's shared channel (csrc_preload/_channel.pyx) as
  kmock.preload._channel;
* the native tier's preload library (csrc_preload/kmock_preload.c, plain C) as
  kmock/preload/_kmock_preload<EXT_SUFFIX>: an LD_PRELOAD library, built as an extension
  only so that ``pip install -e .`` compiles it (it has no PyInit and is never imported).
"""
import glob
import importlib.util
import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# What runs on every ioctl, conversion, KVM_RUN and forwarded call, and holds no @hookimpl:
# pluggy (1.7 and later) takes only plain Python functions as hook implementations, so a
# module with one stays interpreted (tests/test_compiled.py checks it). Cold code (the CLI, the
# uapi structs, profiles, snapshots, pictures, the test helpers, the benchmarks, demos and
# fault scenarios) stays interpreted: compiling it would only lengthen the build.
HOT = [
    "kmock/kvm/*.py", "kmock/iommufd/*.py",
    "kmock/kernel.py", "kmock/kernel_util.py", "kmock/notifier.py", "kmock/fdtable.py",
    "kmock/file.py", "kmock/physmem.py", "kmock/mapping.py", "kmock/_libc.py",
    "kmock/consequences.py", "kmock/faults.py", "kmock/syscall_api.py",
    "kmock/preload/server.py", "kmock/preload/protocol.py", "kmock/preload/argrules.py",
    "plugins/kmock_*/*.py",
]
COLD = ("__init__.py", "demo.py", "scenarios.py")


def _hot_modules():
    paths = sorted({p for pattern in HOT for p in glob.glob(pattern)})
    # -O2 -g0: about 40% less build time than Python's -O3 -g, the same speed within noise
    return [Extension(_module_name(p), [p], extra_compile_args=["-O2", "-g0"])
            for p in paths if not p.endswith(COLD)]


def _module_name(path):
    parts = path[:-3].split("/")
    return ".".join(parts[1:] if parts[0] == "plugins" else parts)


class ParallelBuildExt(build_ext):
    """Compiles the extensions on every core (pip gives build_ext no -j), then dates each
    compiled hot module with its source's modification time as it was when Cython read it
    (SOURCE_MTIMES), so that kmock.compiled sees a source edited during the build as newer
    than its build: stale, interpreted, never its old self."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self):
        super().run()
        for ext in self.extensions:
            source = SOURCE_MTIMES.get(ext.name)
            if source is None:
                continue
            path, mtime = source
            built = [self.get_ext_fullpath(ext.name),
                     os.path.join(os.path.dirname(path),
                                  os.path.basename(self.get_ext_filename(ext.name)))]
            for out in built:
                if os.path.exists(out):
                    os.utime(out, ns=(mtime, mtime))


core = cythonize(
    [Extension("kmock.mm._core", ["csrc_cython/_core.pyx"]),
     Extension("kmock.testing._patch", ["csrc_cython/_patch.pyx"]),
     Extension("kmock._fstat", ["csrc_cython/_fstat.pyx"]),
     Extension("kmock._sync", ["csrc_cython/_sync.pyx"]),
     Extension("kmock.preload._channel", ["csrc_preload/_channel.pyx"])],
    compiler_directives={"language_level": "3", "boundscheck": False, "wraparound": False},
)
def _compiled_rules():
    """kmock/compiled.py (standard library only) loaded on its own: its ``cimported`` is the
    one reading of the .pxd cimports, for this build and for the checks at import."""
    spec = importlib.util.spec_from_file_location("_kmock_compiled_rules", "kmock/compiled.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_RULES = _compiled_rules()


def _source_of(module):
    """The .py of a module of this project (kmock.x.y, or a plugin's kmock_p.y)."""
    parts = module.split(".")
    return os.path.join(*(() if parts[0] == "kmock" else ("plugins",)), *parts) + ".py"


def _source_mtime(path):
    """The newest of the .py, its augmenting .pxd and every .pxd that one cimports
    (transitively): the build is current with all of them, as kmock.compiled checks."""
    files, todo = {path}, [path]
    while todo:
        source = todo.pop()
        pxd = source[:-3] + ".pxd"
        if pxd in files or not os.path.exists(pxd):
            continue
        files.add(pxd)
        todo.extend(_source_of(m) for m in _RULES.cimported(source))
    return max(os.stat(p).st_mtime_ns for p in files)


#: module name -> (source path, its mtime when Cython reads it): see ParallelBuildExt.run
SOURCE_MTIMES = {e.name: (e.sources[0], _source_mtime(e.sources[0])) for e in _hot_modules()}
# Python semantics unchanged: annotations stay annotations (no C typing from them)
hot = cythonize(
    _hot_modules(), build_dir="build/cython", nthreads=os.cpu_count() or 1, quiet=True,
    compiler_directives={"language_level": "3", "annotation_typing": False, "binding": True},
)
preload = Extension("kmock.preload._kmock_preload", ["csrc_preload/kmock_preload.c"],
                    libraries=["dl", "pthread"], extra_compile_args=["-O2"])

setup(ext_modules=core + hot + [preload], cmdclass={"build_ext": ParallelBuildExt})
