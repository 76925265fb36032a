"""kmock.testing: tools for testing VMMs and kmock itself.

- ``pytest_plugin``: the ``kmock`` fixtures, marker and options (entry point pytest11);
- ``patcher`` (with ``fake_os``, ``fake_mmap``, ``fake_libc``): ``kmock.patched(k)``, the
  os/fcntl/mmap/ctypes calls of unmodified code reach the mock for its fds;
- ``report``: the failure report section and ``--kmock-dump`` files (kmock.snapshot);
- ``strategies`` and ``stateful``: hypothesis strategies and the VmmMachine base;
- ``platforms``: a Kernel for a profile and a platform, with clear errors;
- ``conformance``: the same sequence of syscalls run on the real kernel
  (``kmock.HostKernel``) and on the mock (``kmock.Kernel(profile="host")``), compared step
  by step (``kmock conform``); ``errnos``: small helpers for tests.
"""
