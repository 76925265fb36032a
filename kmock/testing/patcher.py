"""Patcher: unmodified os/fcntl/mmap/ctypes code reaches a kmock.Kernel for its fds.

``with kmock.patched(k): vmm.run()`` (or ``Patcher(k).start()`` / ``.stop()``)
replaces ``os.open/close/closerange/read/write/pread/pwrite/lseek/fstat/ftruncate/
dup/dup2/posix_fallocate/memfd_create``, ``fcntl.ioctl`` and ``mmap.mmap`` (see
fake_os, fake_mmap), and libc's ``ioctl/fallocate/mmap/munmap`` as called through
ctypes (fake_libc). Opening /dev/kvm, /dev/iommu or a /dev/vfio path reaches the
Kernel; every other path and fd reaches the real OS.

As pyfakefs does, the patcher works on the loaded modules (``sys.modules``), not on
the os module itself: a module's global ``os``/``fcntl``/``mmap`` becomes a copy of
the module with the replacements, and names bound to the real functions
(``from os import open``, ``from mmap import mmap``, ``_ioctl = libc.ioctl``) are
rebound, while active; ``sys.modules["os"]`` (and fcntl, mmap) is the copy too, so an
``import os`` inside a function gets it. kmock's own modules and those in ``skip``
(pytest, pluggy, hypothesis, the standard library) keep the real modules, so the
mock's own use of the OS is never intercepted. A module imported while patching is
active keeps the copy after ``stop()``, which then passes every call to the OS; its
``from os import open`` names are real unless ``rescan()`` runs. One of kmock's own modules
imported while active gets the real modules and functions back at once (kmock.compiled
calls :func:`restore_real`).
The result of a scan is cached per module while its namespace keeps its size.

``pause()``/``resume()`` undo and redo the patching without losing state (the pytest
plugin pauses while pytest reports). Patchers nest: the innermost one wins, and
``stop()`` restores what was there before.
"""

import collections
import ctypes
import fcntl
import mmap as _mmap
import os
import sys
import types
import weakref

from . import fake_libc, fake_mmap, fake_os

#: top-level packages whose modules keep the real os/fcntl/mmap
SKIP = ("kmock", "_pytest", "pytest", "pluggy", "hypothesis", "xdist", "execnet", "importlib",
        "ctypes", "os", "posix", "fcntl", "mmap", "builtins", "sys", "typing", "encodings",
        "coverage", "pyfakefs", "rich", "typer", "click", "subprocess", "shutil", "tempfile",
        "pathlib", "io", "socket", "selectors", "multiprocessing", "concurrent", "asyncio",
        "logging", "threading", "py")

_REAL_BY_ID = {id(f): key for key, f in fake_os.REAL.items()}
_REAL_BY_ID[id(_mmap.mmap)] = ("mmap", "mmap")
_MODULES = {"os": os, "fcntl": fcntl, "mmap": _mmap}
for _name, _mod in _MODULES.items():
    _REAL_BY_ID[id(_mod)] = ("module", _name)

#: the patchers started and not stopped, innermost last (only that one is active)
_stack = []

#: module name -> (namespace size, [(attr, key)]) of the last scan
_scan_cache = {}


class Patcher:
    """Route the standard library's fd calls for ``kernel``'s fds to ``kernel``.

    ``scan_modules``: patch every loaded module not skipped (default True); with
    False, only the modules named in ``modules``.
    ``skip``: extra top-level package names whose modules are left alone. ``trace``: how many of the last
    calls routed to the Kernel to keep in ``self.trace`` (for failure reports).
    """

    def __init__(self, kernel, scan_modules=True, skip=(), modules=(), trace=32):
        self.kernel = kernel
        self.scan_modules = scan_modules
        #: with scan_modules=False, the names of the only modules to patch
        self.modules = tuple(modules)
        self.skip = frozenset(SKIP + tuple(skip))
        self.fds = set()
        self.memfds = set()
        #: address -> mapping, of kmock mappings made through ctypes mmap
        self.c_maps = {}
        #: the MockMmap objects handed out (weakly held)
        self.maps = weakref.WeakSet()
        #: (fd, why) of kmock fds found closed behind the patcher's back
        self.stale_fds = []
        self.tracing = bool(trace)
        self._trace = collections.deque(maxlen=trace or 1)
        self._compiled = fake_os.compiled()
        #: records a routed call (None when ``trace=0``: nothing is recorded)
        self.note = None
        if trace:
            self.note = self._compiled.note if self._compiled else self._trace.append
        self._fakes = fake_os.make_fakes(self, self._compiled)
        self._fakes[("mmap", "mmap")] = fake_mmap.make_mmap_class(self)
        self._proxies = {}
        for name, mod in _MODULES.items():
            proxy = types.ModuleType(name, mod.__doc__)
            proxy.__dict__.update(vars(mod))
            for (m, attr), fake in self._fakes.items():
                if m == name:
                    setattr(proxy, attr, fake)
            self._proxies[("module", name)] = proxy
        self._saved = []  # (object, attr, old value, had attr)
        self.active = False
        self.started = False

    # --- state -------------------------------------------------------------------------

    @property
    def trace(self):
        """The last calls routed to the Kernel, oldest first: tuples (name, fd, args...)."""
        calls = list(self._trace)
        if self.active and self._compiled is not None and self.tracing:
            calls += self._compiled.tail()
        return calls[-self._trace.maxlen:] if self.tracing else []

    def fake(self, module, name):
        return self._fakes[(module, name)]

    def adopt(self, fd):
        """``fd`` is a kmock fd the patcher did not see being made: add it (True)."""
        if type(fd) is int and self.kernel.owns_fd(fd):
            self.fds.add(fd)
            return True
        return False

    def stale(self, fd):
        """A real call returned ``fd``, still a kmock fd for us: its file was closed behind
        our back and the number reused. The new file keeps the number; the Kernel forgets
        its stale entry (kmock.fdtable.FdTable.forget) and drops the old file."""
        self.fds.discard(fd)
        self.stale_fds.append((fd, "closed outside the patched os.close, number reused"))
        f = self.kernel.fdtable.forget(fd)
        if f is not None:
            f.put()

    def open_mappings(self):
        """kmock mappings made through mmap.mmap or ctypes mmap and not closed yet."""
        return [m for m in list(self.maps) if not m.closed] + [
            m for m in self.c_maps.values() if not m.closed]

    def sync(self):
        """Re-read the kmock fds from the Kernel (cost: the process's open fds)."""
        try:
            names = os.listdir("/proc/self/fd")
        except OSError:
            names = []
        owns = self.kernel.owns_fd
        self.fds.clear()
        self.fds.update(fd for fd in map(int, names) if owns(fd))

    # --- patching ----------------------------------------------------------------------

    def start(self):
        if self.started:
            return self
        if _stack:
            _stack[-1].pause()
        _stack.append(self)
        self.started = True
        self.resume()
        return self

    def stop(self):
        if not self.started:
            return
        self.pause()
        self.started = False
        # a module imported while active keeps our proxy: make it pass everything on
        self.fds.clear()
        self.memfds.clear()
        if self in _stack:
            was_top = _stack[-1] is self
            _stack.remove(self)
            if was_top and _stack:
                _stack[-1].resume()

    def pause(self):
        """Restore the real functions; state (fds, mappings) is kept."""
        if not self.active:
            return
        for obj, attr, old, had in reversed(self._saved):
            if obj is sys.modules:
                sys.modules[attr] = old
            elif had:
                setattr(obj, attr, old)
            else:
                try:
                    delattr(obj, attr)
                except AttributeError:
                    pass
        self._saved.clear()
        if self._compiled is not None:
            if self.tracing:
                self._trace.extend(self._compiled.tail())
            self._compiled.activate(None)
        self.active = False

    def resume(self):
        if self.active or not self.started:
            return
        self.sync()
        if self._compiled is not None:
            self._compiled.activate(self)
        self._patch_modules()
        for (_, name), proxy in self._proxies.items():
            self._set_item(sys.modules, name, proxy)
        self.active = True

    def rescan(self):
        """Scan modules imported since start (and libc handles made since)."""
        if self.active:
            self.pause()
            self.resume()

    def _set_item(self, modules, name, value):
        self._saved.append((modules, name, modules[name], True))
        modules[name] = value

    def _set(self, obj, attr, value):
        d = getattr(obj, "__dict__", None)
        had = d is not None and attr in d
        self._saved.append((obj, attr, d[attr] if had else None, had))
        setattr(obj, attr, value)

    def _patch_modules(self):
        libcs = {}
        for mname, mod in list(sys.modules.items()):
            if mod is None or mname.partition(".")[0] in self.skip or (
                    not self.scan_modules and mname not in self.modules):
                continue
            try:
                ns = vars(mod)
            except TypeError:
                continue
            cached = _scan_cache.get(mname)
            if cached is None or cached[0] != len(ns):
                hits = []
                for attr, value in list(ns.items()):
                    key = _REAL_BY_ID.get(id(value))
                    if key is not None and value is _real(key):
                        hits.append((attr, key))
                    elif isinstance(value, ctypes.CDLL):
                        if fake_libc.is_libc(value):
                            hits.append((attr, "libc"))
                    elif isinstance(value, ctypes._CFuncPtr):
                        n = fake_libc.func_name(value)
                        if n is not None:
                            hits.append((attr, ("libcfunc", n)))
                cached = _scan_cache[mname] = (len(ns), hits)
            for attr, key in cached[1]:
                value = ns.get(attr)
                if key == "libc":
                    if isinstance(value, ctypes.CDLL):
                        libcs[id(value)] = value
                elif key[0] == "libcfunc":
                    if isinstance(value, ctypes._CFuncPtr):
                        self._set(mod, attr, fake_libc.LibcFunc(value, key[1], self))
                elif key[0] == "module":
                    if value is _MODULES[key[1]]:
                        self._set(mod, attr, self._proxies[key])
                elif value is _real(key):
                    self._set(mod, attr, self._fakes[key])
        for lib in libcs.values():
            for n in fake_libc.NAMES:
                try:
                    real = getattr(lib, n)
                except AttributeError:
                    continue
                if isinstance(real, fake_libc.LibcFunc):
                    continue
                self._set(lib, n, fake_libc.LibcFunc(real, n, self))

    # --- context manager ---------------------------------------------------------------

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def active_patchers():
    """The patchers started and not stopped, innermost last."""
    return tuple(_stack)


def restore_real(module):
    """Undo in ``module``'s namespace what importing it while a patcher is active bound: the
    patchers' copies of os/fcntl/mmap (they are in ``sys.modules`` then) and their fake
    functions become the real ones again. kmock.compiled calls this for kmock's own modules
    (the patcher leaves them alone: the mock's own use of the OS is never intercepted) that
    are first imported while a patcher is active."""
    if not _stack:
        return
    keys = {}
    for p in _stack:
        for key, proxy in p._proxies.items():
            keys[id(proxy)] = key
        for key, fake in p._fakes.items():
            keys[id(fake)] = key
    ns = vars(module)
    for attr, value in list(ns.items()):
        key = keys.get(id(value))
        if key is not None:
            ns[attr] = _real(key)


def _real(key):
    if key[0] == "module":
        return _MODULES[key[1]]
    if key == ("mmap", "mmap"):
        return fake_mmap.REAL_MMAP
    return fake_os.REAL[key]


def patched(kernel, **options):
    """``with kmock.patched(k): ...``: a started Patcher (see Patcher for ``options``)."""
    return Patcher(kernel, **options)
