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


class RealFallocate:
    """The real kernel's 4K guest_memfd fallocate, timed in rounds of ``n`` that a suite
    interleaves with its own rounds (``round()`` after each), so that a shared machine's
    changing speed (it varies 2x within a minute here) hits the mock and its reference
    alike. ``median`` and ``best`` are seconds per call; None without /dev/kvm (``note``
    says why)."""

    def __init__(self, n, size=1 << 30):
        from ..host import HostKernel

        self.n = n
        self.samples = []
        self._host = HostKernel()
        try:
            self._fn = real_fallocate_4k(self._host, size)
            self.note = "DEFAULT VM"
        except OSError as e:
            self._fn = None
            self.note = f"/dev/kvm: {os.strerror(e.errno)}"
            self._host.close_all()

    def round(self):
        if self._fn is not None:
            self.samples.append(per_call(self._fn, self.n))

    @property
    def median(self):
        return statistics.median(self.samples) if self.samples else None

    @property
    def best(self):
        return min(self.samples) if self.samples else None

    def close(self):
        self._host.close_all()


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


def arch_row(name, ops, times, real, core=None, target=True):
    """One architecture conversion row: the mock's per-round seconds per op ``times``
    against ``real`` (a RealFallocate measured in the same rounds). The ratio and the
    verdict are median over median (what a user sees); best over best is shown too."""
    med, best = statistics.median(times), min(times)
    ratio = None if real.median is None else med / real.median
    return {"name": name, "ops": ops, "mock_s_median": med, "mock_s_best": best,
            "core_ioctls_s": core, "real_fallocate_s": real.median,
            "real_best_s": real.best, "real_rounds": len(real.samples),
            "real_note": real.note, "ratio": ratio,
            "ratio_best": None if real.best is None else best / real.best,
            "target": "<= 10x real 4K fallocate" if target else None,
            "met": None if ratio is None or not target else ratio <= 10}


def print_arch_rows(title, rows, out):
    """Architecture conversion rows (``arch_row``) as one rich table: name, mock median
    and best, the core's attributes + punch share, the real 4K fallocate (median and best
    of its interleaved rounds), the ratios (median, best) and the target's verdict."""
    import io

    from rich.console import Console
    from rich.table import Table

    def us(x):
        return "-" if x is None else f"{x * 1e6:.2f}"

    table = Table(title=title)
    for col in ("workload", "mock us/op median / best", "of which attributes + punch",
                "real 4K fallocate us median / best", "ratio median / best", "target"):
        table.add_column(col)
    for r in rows:
        real = "skipped (" + r["real_note"] + ")" if r["real_fallocate_s"] is None else \
            f"{us(r['real_fallocate_s'])} / {us(r['real_best_s'])}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.1f}x / {r['ratio_best']:.1f}x"
        met = "" if r["target"] is None else \
            f"{r['target']}: " + ("-" if r["met"] is None else ("met" if r["met"] else "MISSED"))
        table.add_row(r["name"], f"{us(r['mock_s_median'])} / {us(r['mock_s_best'])}",
                      us(r["core_ioctls_s"]), real, ratio, met)
    console = Console(width=150, record=True, file=io.StringIO())
    console.print(table)
    out(console.export_text().rstrip())
