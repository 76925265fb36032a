"""Python face of kmock's compiled memory core, and its pure-Python twin.

``RangeMap``, ``PageTable`` and ``FrameAllocator`` come from the compiled extension
``kmock.mm._core`` (built from ``csrc_cython/_core.pyx``). With the environment variable
``KMOCK_PURE_PYTHON=1`` they come from the pure-Python twin ``kmock.mm._pure`` instead.
The twins are always available as ``PyRangeMap``, ``PyPageTable`` and ``PyFrameAllocator``.

There is deliberately no silent fallback: if the extension is missing and
``KMOCK_PURE_PYTHON`` is not set, importing this package fails, so that a broken build
cannot hide behind the twin.
"""

from ..compiled import pure_requested as _pure_requested
from ._pure import FrameAllocator as PyFrameAllocator
from ._pure import PageTable as PyPageTable
from ._pure import RangeMap as PyRangeMap

if _pure_requested():
    RangeMap = PyRangeMap
    PageTable = PyPageTable
    FrameAllocator = PyFrameAllocator
    IMPLEMENTATION = "pure"
else:
    try:
        from ._core import FrameAllocator, PageTable, RangeMap
    except ImportError as exc:  # pragma: no cover - exercised only with a broken build
        raise ImportError(
            "kmock.mm: the compiled core kmock.mm._core is not built or failed to load "
            f"({exc}). Build it with `python3 -m pip install -e .`, or set "
            "KMOCK_PURE_PYTHON=1 to use the pure-Python twin explicitly."
        ) from exc
    IMPLEMENTATION = "compiled"

__all__ = [
    "RangeMap",
    "PageTable",
    "FrameAllocator",
    "PyRangeMap",
    "PyPageTable",
    "PyFrameAllocator",
    "IMPLEMENTATION",
]
