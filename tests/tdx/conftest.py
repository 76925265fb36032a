"""tests/tdx: make plugins/kmock_tdx importable before the package is registered in
pyproject.toml (phase 2 adds it there, next to kmock_sw_protected)."""

import importlib.util
import os
import sys

if importlib.util.find_spec("kmock_tdx") is None:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "plugins"))
