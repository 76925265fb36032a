"""Make this worktree's plugins/ importable: kmock_snp is not registered in pyproject.toml
until the plugin is wired into the contract (phase 2)."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_PLUGINS = os.path.join(_ROOT, "plugins")
if _PLUGINS not in sys.path:
    sys.path.insert(0, _PLUGINS)
