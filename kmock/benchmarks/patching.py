"""``kmock bench patching``: what the os/fcntl/mmap patcher costs, side by side in one run.

Rows on a non-kmock fd compare the real function with the patched one (the same call
through ``sys.modules["os"]`` while a Patcher is active, as user code reaches it);
target (issue 12): at most 1.3x. The row on a kmock fd compares a patched
``fcntl.ioctl`` with a direct ``Kernel.ioctl``; target at most 1.2x. Rounds of the
two sides are interleaved; best and median per call are printed.
"""

import fcntl
import os
import statistics
import sys
import time

from ..uapi import kvm as K

TARGET_REAL = 1.3
TARGET_KMOCK = 1.2
FIONREAD = 0x541B


def _round(fn, n):
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def _cases(k, patched_os, patched_fcntl, null, pipe_r, vm):
    buf = bytes(4)
    real_read, real_fstat, real_ioctl = os.read, os.fstat, fcntl.ioctl
    p_read, p_fstat, p_ioctl = patched_os.read, patched_os.fstat, patched_fcntl.ioctl
    k_ioctl = k.ioctl
    cap = K.KVM_CAP_GUEST_MEMFD
    req = K.KVM_CHECK_EXTENSION
    return [
        ("os.read(/dev/null, 0)", "real", lambda: real_read(null, 0),
         lambda: p_read(null, 0), TARGET_REAL),
        ("os.fstat(/dev/null)", "real", lambda: real_fstat(null), lambda: p_fstat(null),
         TARGET_REAL),
        ("fcntl.ioctl(pipe, FIONREAD)", "real", lambda: real_ioctl(pipe_r, FIONREAD, buf),
         lambda: p_ioctl(pipe_r, FIONREAD, buf), TARGET_REAL),
        ("ioctl(vm, CHECK_EXTENSION)", "k.ioctl", lambda: k_ioctl(vm, req, cap),
         lambda: p_ioctl(vm, req, cap), TARGET_KMOCK),
    ]


def run(quick=False, out=print, rounds=9):
    from .. import Kernel
    from ..testing.patcher import Patcher

    n = 2000 if quick else 50000
    rounds = 3 if quick else rounds
    k = Kernel()
    null = os.open("/dev/null", os.O_RDONLY)
    pipe_r, pipe_w = os.pipe()
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    patcher = Patcher(k, scan_modules=False).start()
    rows = []
    try:
        patched_os, patched_fcntl = sys.modules["os"], sys.modules["fcntl"]
        assert patched_os is not os, "the patcher did not install its os"
        for name, base, fa, fb, target in _cases(k, patched_os, patched_fcntl, null, pipe_r,
                                                  vm):
            a, b = [], []
            for _ in range(rounds):
                a.append(_round(fa, n))
                b.append(_round(fb, n))
            rows.append({"op": name, "baseline": base, "base_best_ns": min(a) * 1e9,
                         "base_median_ns": statistics.median(a) * 1e9,
                         "patched_best_ns": min(b) * 1e9,
                         "patched_median_ns": statistics.median(b) * 1e9,
                         "ratio_best": min(b) / min(a),
                         "ratio_median": statistics.median(b) / statistics.median(a),
                         "target": target})
    finally:
        patcher.stop()
        k.close_all()
        for fd in (null, pipe_r, pipe_w):
            os.close(fd)
    out(f"{'operation':<30} {'baseline':>8} {'base best/med ns':>18} "
        f"{'patched best/med ns':>20} {'ratio best/med':>15} target")
    for r in rows:
        ok = "ok" if r["ratio_best"] <= r["target"] else "OVER"
        out(f"{r['op']:<30} {r['baseline']:>8} "
            f"{r['base_best_ns']:>8.0f}/{r['base_median_ns']:<9.0f} "
            f"{r['patched_best_ns']:>9.0f}/{r['patched_median_ns']:<10.0f} "
            f"{r['ratio_best']:>6.2f}/{r['ratio_median']:<8.2f} <= {r['target']}x {ok}")
    return rows


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
