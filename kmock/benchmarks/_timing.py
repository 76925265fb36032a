"""What every ``kmock bench`` suite measures the same way: time per call, and the real
kernel's 4K guest_memfd fallocate that the mock's rows are compared against."""

import os
import statistics
import time

PAGE = 4096


def per_call(fn, n, rounds=1):
    """Best seconds per call of ``fn`` over ``rounds`` rounds of ``n`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def side_by_side(fns, n, rounds):
    """Time each callable of ``fns`` for ``rounds`` rounds of ``n`` calls, the rounds
    interleaved (round 1 of each, then round 2 ...) so that the noise of a shared
    machine hits every column alike. Returns, per callable, (best, median) seconds per
    call: the best is what the code can do, the median what a user will see."""
    samples = [[] for _ in fns]
    for _ in range(rounds):
        for fn, out in zip(fns, samples):
            out.append(per_call(fn, n))
    return [(min(s), statistics.median(s)) for s in samples]


def scattered_offsets(span, n=4096):
    """``n`` page-aligned offsets spread over ``span`` bytes (a fixed stride, no repeats
    within one round)."""
    return [(i * 7919 % (span // PAGE)) * PAGE for i in range(n)]


def real_fallocate_4k(host, size=1 << 30):
    """A callable doing one 4K KEEP_SIZE fallocate of a real guest_memfd per call, at
    scattered offsets, through ``host`` (a kmock.HostKernel on /dev/kvm)."""
    from ..uapi import kvm as K

    kvm = host.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = host.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_DEFAULT_VM)
    gmem = host.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size))
    offsets = scattered_offsets(size)
    fallocate = host.fallocate
    it = [0]

    def falloc():
        i = it[0] = (it[0] + 1) & 4095
        fallocate(gmem, 0x01, offsets[i], PAGE)  # FALLOC_FL_KEEP_SIZE

    return falloc


def real_fallocate_per_call(n, size=1 << 30, rounds=3):
    """(best seconds per real 4K guest_memfd fallocate over ``rounds`` rounds of ``n``,
    "DEFAULT VM"), or (None, why) without a usable /dev/kvm: the reference of the
    architecture conversion rows."""
    from ..host import HostKernel

    h = HostKernel()
    try:
        return per_call(real_fallocate_4k(h, size), n, rounds=rounds), "DEFAULT VM"
    except OSError as e:
        return None, f"/dev/kvm: {os.strerror(e.errno)}"
    finally:
        h.close_all()


def print_arch_rows(title, rows, out):
    """The architecture conversion rows (kmock.benchmarks.conversion_snp / _cca) as one
    rich table: name, mock median and best, the core's attributes + punch share, the real
    4K fallocate, the ratio and the target's verdict."""
    import io

    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("workload", "mock us/op (median)", "best", "of which attributes + punch",
                "real 4K fallocate us", "ratio", "target"):
        table.add_column(col)
    for r in rows:
        real = "skipped (" + r["real_note"] + ")" if r["real_fallocate_s"] is None else \
            f"{r['real_fallocate_s'] * 1e6:.2f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.1f}x"
        met = "-" if r["met"] is None else ("met" if r["met"] else "MISSED")
        table.add_row(r["name"], f"{r['mock_s_median'] * 1e6:.2f}", f"{r['mock_s_best'] * 1e6:.2f}",
                      f"{r['core_ioctls_s'] * 1e6:.2f}", real, ratio, f"{r['target']}: {met}")
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(table)
    out(console.export_text().rstrip())
