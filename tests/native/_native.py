"""What the native-tier tests share: the compiler, whether the real /dev/kvm is usable,
building a C program, and the preload library (the ``lib`` fixture in conftest.py)."""

import os
import shutil
import subprocess

import pytest

CC = shutil.which("cc")
REAL_KVM = os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
#: mark a module whose tests build C programs
needs_cc = pytest.mark.skipif(CC is None, reason="no C compiler (cc)")


def build(out, source, *flags):
    """Compile ``source`` (a path) to ``out``; returns ``out`` as a string."""
    subprocess.run([CC, "-O1", "-o", str(out), str(source), *flags], check=True)
    return str(out)


def run_mock(program, kernel, **kw):
    """Run ``program`` under ``kmock run`` against ``kernel``: it must exit 0, print "done"
    last, and the server must have hit no bug of its own."""
    from kmock import preload

    res = preload.run([program], kernel=kernel, timeout=120, **kw)
    assert res.server.errors == []
    assert res.returncode == 0, res.stderr
    assert res.stdout.rstrip().endswith("done")
    return res


def run_real(program, timeout=120):
    """Run ``program`` on the real kernel (it must exit 0); its CompletedProcess."""
    real = subprocess.run([program], check=False, capture_output=True, text=True,
                          timeout=timeout)
    assert real.returncode == 0, real.stderr
    return real


def up_lines_match_real(program, minimum):
    """Run ``program`` on the real kernel and under kmock's ``host`` profile: the lines it
    prints with "up " must be the same, and more than ``minimum`` (so a program that
    stopped early cannot pass); returns the real run's stdout."""
    import kmock

    real = run_real(program)
    res = run_mock(program, kmock.Kernel("host"))
    assert lines(res.stdout, "up ") == lines(real.stdout, "up ")
    assert len(lines(real.stdout, "up ")) > minimum
    return real.stdout


def lines(text, prefix):
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]
