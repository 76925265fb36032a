"""The real os, fcntl and mmap modules, taken when kmock is imported.

While kmock.testing's patcher is active, ``sys.modules`` holds its copies of these modules
(see kmock.testing.patcher), so a kmock module imported for the first time then would bind
the copies. A module that must reach the real OS whatever is patched (kmock.host: HostKernel
is the real kernel) takes them from here; ``import kmock`` imports this module first, before
any patcher can exist.
"""

import fcntl
import mmap
import os

__all__ = ["fcntl", "mmap", "os"]
