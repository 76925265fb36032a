"""Which memory-core implementations the tests/mm tests run on (compiled and pure)."""

import importlib
import os

import pytest

PURE_ENV = os.environ.get("KMOCK_PURE_PYTHON", "") not in ("", "0")

IMPLS = ["compiled", "pure"]


def load_impl(name):
    """The module providing RangeMap/PageTable/FrameAllocator for implementation name."""
    if name == "pure":
        return importlib.import_module("kmock.mm._pure")
    try:
        return importlib.import_module("kmock.mm._core")
    except ImportError:
        if PURE_ENV:
            pytest.skip("compiled core not built (KMOCK_PURE_PYTHON=1 run)")
        raise
