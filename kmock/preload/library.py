"""Where the preload library is: built by the package's build (setup.py compiles
csrc_preload/kmock_preload.c as ``kmock/preload/_kmock_preload<EXT_SUFFIX>``), or, in a
source checkout that was not built, compiled on first use with the system compiler
into the user's cache directory."""

import hashlib
import importlib.machinery
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "csrc_preload" / "kmock_preload.c"
#: the header it includes (the shared channel, also compiled into the server)
HEADER = SOURCE.with_name("kmock_chan.h")


class LibraryMissing(RuntimeError):
    """No built library and no way to build one (no source or no C compiler)."""


def built_library():
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = HERE / f"_kmock_preload{suffix}"
        if p.exists():
            return p
    return None


def library_path():
    """The path of the preload library (a str), building it if needed."""
    env = os.environ.get("KMOCK_PRELOAD_LIB")
    if env:
        return env
    p = built_library()
    if p is not None and (not SOURCE.exists() or p.stat().st_mtime >= max(
            f.stat().st_mtime for f in (SOURCE, HEADER) if f.exists())):
        return str(p)
    return str(build())


def build(dest_dir=None):
    """Compile the library with ``cc`` into ``dest_dir`` (default: a cache directory)."""
    if not SOURCE.exists():
        raise LibraryMissing(f"the preload library is not built and its source {SOURCE} is missing")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise LibraryMissing("the preload library is not built and there is no C compiler (cc)")
    src = SOURCE.read_bytes() + (HEADER.read_bytes() if HEADER.exists() else b"")
    tag = hashlib.sha256(src).hexdigest()[:16]
    if dest_dir is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        dest_dir = Path(base) / "kmock"
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / f"kmock_preload-{tag}.so"
    if not out.exists():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([cc, "-O2", "-shared", "-fPIC", "-o", str(tmp), str(SOURCE), "-ldl",
                        "-lpthread"], check=True)
        os.replace(tmp, out)
    return out
