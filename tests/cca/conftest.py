"""Make the in-tree plugin importable as ``kmock_cca`` before it is registered as an entry
point (phase 2 adds it to pyproject.toml)."""

import os
import sys

_PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "plugins")
if _PLUGINS not in sys.path:
    sys.path.insert(0, _PLUGINS)
