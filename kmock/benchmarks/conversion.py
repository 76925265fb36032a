"""Benchmark of in-place shared/private conversion (``kmock bench conversion``).

``run(quick=False, out=print)`` runs the workloads, prints a table and returns its rows
(a list of dicts). ``quick=True`` shrinks every workload about 100x (a smoke test).

C1  profile gmem-attributes-v8, SW_PROTECTED VM: a 64 GiB guest_memfd bound to the VM by
    one memslot, 10,000 scattered pages mapped in stage-2 (KVM_PRE_FAULT_MEMORY through a
    vCPU), two host mappings of the whole file; 100,000 random 4K
    KVM_SET_MEMORY_ATTRIBUTES2 calls alternating directions (to-shared a random page,
    to-private the page made shared 1,000 calls earlier, so every call changes state and
    about 500 shared pages are live), in 10 rounds. After each round, a round of 4K
    fallocates at random offsets of a 64 GiB guest_memfd on the real kernel
    (kmock.HostKernel on /dev/kvm, a DEFAULT VM when the host offers no SW_PROTECTED
    VM); the column is skipped when /dev/kvm cannot be used. Target: a conversion costs
    at most 10x a real fallocate, the medians of the rounds compared.
C2  profile gmem-convert-rfc-v2: a 4 TiB guest_memfd with 1G hugetlb folios
    (SUPPORT_SHARED|HUGETLB|GUESTMEM_HUGETLB_FLAG_1GB), fully allocated by one fallocate,
    then 1,000,000 random 4K KVM_GMEM_CONVERT_SHARED/PRIVATE calls (same alternation,
    each to-shared splits a 1G folio, each to-private merges it back). Run in a
    subprocess so that its peak RSS (ru_maxrss) counts only this workload. Target:
    peak RSS under 500 MB.
"""

import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time

from ._timing import RealFallocate

P = 4096
GIB = 1 << 30
WINDOW = 1000


def _alternating(npages, n, seed):
    """(page, to_private) for n calls: share a random page, make private again the page
    shared WINDOW calls earlier."""
    rng = random.Random(seed)
    shared = [rng.randrange(npages) for _ in range((n + 1) // 2)]
    half = WINDOW // 2
    ops = []
    for i in range(n):
        j = i // 2
        if i % 2 == 0:
            ops.append((shared[j], False))
        else:
            ops.append((shared[j - half] if j >= half else shared[j], True))
    return ops


def _c1_mock(size, n, nprefault, rounds=1, between=None):
    """C1 on the mock: (seconds for the n conversions, info); they run in ``rounds`` equal
    chunks, ``between()`` after each (the real kernel's reference round), and
    info["round_s_per_op"] holds each chunk's seconds per conversion."""
    import kmock
    from kmock.uapi import gmem as G
    from kmock.uapi import kvm as K

    k = kmock.Kernel(profile="gmem-attributes-v8")
    try:
        kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD,
                       K.kvm_create_guest_memfd(size=size, flags=K.GUEST_MEMFD_FLAG_MMAP))
        gpa = 1 << 32
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=gpa, memory_size=size,
            guest_memfd=gmem))
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        npages = size // P
        rng = random.Random(7)
        pf = K.kvm_pre_fault_memory()
        for page in rng.sample(range(npages), nprefault):
            pf.gpa, pf.size, pf.flags = gpa + page * P, P, 0
            k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, pf)
        stage2 = getattr(k.vm(vm), "stage2", None)
        mapped0 = stage2.mapped_pages() if stage2 is not None and hasattr(
            stage2, "mapped_pages") else None
        maps = [k.mmap(gmem, size, 3, 1) for _ in range(2)]
        ops = [(page * P, K.KVM_MEMORY_ATTRIBUTE_PRIVATE if priv else 0)
               for page, priv in _alternating(npages, n, 11)]
        a = G.kvm_memory_attributes2(size=P)
        ioctl = k.ioctl
        req = G.KVM_SET_MEMORY_ATTRIBUTES2
        per_round = []
        dt = 0.0
        chunk = max(1, len(ops) // rounds)
        for r in range(rounds):
            part = ops[r * chunk:(r + 1) * chunk if r < rounds - 1 else len(ops)]
            t0 = time.perf_counter()
            for off, attrs in part:
                a.offset = off
                a.attributes = attrs
                ioctl(gmem, req, a)
            t = time.perf_counter() - t0
            dt += t
            per_round.append(t / max(1, len(part)))
            if between is not None:
                between()
        mapped1 = stage2.mapped_pages() if mapped0 is not None else None
        snap = k.snapshot()["guest_memfds"][0]
        for m in maps:
            m.close()
        return dt, {"stage2_mapped_before": mapped0, "stage2_mapped_after": mapped1,
                    "shared_pages_after": npages - snap["private_pages"],
                    "round_s_per_op": per_round}
    finally:
        k.close_all()


def _c2_worker(size, n):
    """Runs in a fresh interpreter: the 4 TiB 1G-folio workload; prints one JSON line."""
    import kmock
    from kmock.uapi import gmem as G
    from kmock.uapi import kvm as K

    k = kmock.Kernel(profile="gmem-convert-rfc-v2")
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    flags = G.GUEST_MEMFD_FLAG_SUPPORT_SHARED | G.GUEST_MEMFD_FLAG_HUGETLB | \
        G.GUESTMEM_HUGETLB_FLAG_1GB | G.GUEST_MEMFD_FLAG_INIT_PRIVATE
    t0 = time.perf_counter()
    gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size,
                                                                           flags=flags))
    k.fallocate(gmem, 1, 0, size)
    t_setup = time.perf_counter() - t0
    ops = _alternating(size // P, n, 13)
    c = G.kvm_gmem_convert(size=P)
    ioctl = k.ioctl
    reqs = (G.KVM_GMEM_CONVERT_SHARED, G.KVM_GMEM_CONVERT_PRIVATE)
    t0 = time.perf_counter()
    for page, priv in ops:
        c.offset = page * P
        ioctl(gmem, reqs[priv], c)
    dt = time.perf_counter() - t0
    snap = k.snapshot()["guest_memfds"][0]
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": dt, "setup": t_setup, "max_rss_kb": rss_kb,
                      "allocated": snap["allocated_pages"], "huge": snap["huge_folios"],
                      "split": snap["split_folios"]}))


def _c2(size, n):
    code = ("import sys; from kmock.benchmarks.conversion import _c2_worker; "
            f"_c2_worker({size}, {n})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(quick=False, out=print):
    scale = 100 if quick else 1
    rows = []

    size1 = (64 * GIB // scale) & ~((2 << 20) - 1)
    n1 = 100_000 // scale
    nprefault = 10_000 // scale
    rounds = 2 if quick else 10
    real = RealFallocate(max(100, 2000 // scale), size1)
    try:  # the conversions in rounds, each followed by a round of real 4K fallocates
        dt, info = _c1_mock(size1, n1, nprefault, rounds, between=real.round)
    finally:
        real.close()
    per_round = info.pop("round_s_per_op")
    conv_us = dt / n1 * 1e6
    real_us = None if real.median is None else real.median * 1e6
    real_note = real.note
    ratio = None if real.median is None else statistics.median(per_round) / real.median
    rows.append({
        "workload": "C1 v8 4K conversions, 64 GiB gmem" if not quick else "C1 (quick)",
        "ops": n1, "seconds": dt, "ops_per_s": n1 / dt if dt else 0.0,
        "us_per_op": conv_us, "real_fallocate_us": real_us, "real_note": real_note,
        "ratio": ratio, "target": "<= 10x real 4K fallocate",
        "met": None if ratio is None else ratio <= 10, **info,
    })

    size2 = (4096 // scale) * GIB
    n2 = 1_000_000 // scale
    c2 = _c2(size2, n2)
    rss_mb = c2["max_rss_kb"] / 1024
    rows.append({
        "workload": "C2 RFC v2 4K conversions, 4 TiB gmem, 1G folios" if not quick
        else "C2 (quick)",
        "ops": n2, "seconds": c2["seconds"], "ops_per_s": n2 / c2["seconds"] if c2["seconds"]
        else 0.0, "us_per_op": c2["seconds"] / n2 * 1e6, "setup_seconds": c2["setup"],
        "peak_rss_mb": rss_mb, "target": "peak RSS < 500 MB", "met": rss_mb < 500,
        "allocated_pages": c2["allocated"], "huge_folios": c2["huge"],
        "split_folios": c2["split"],
    })

    out(f"{'workload':<52} {'ops':>9} {'s':>7} {'ops/s':>9} {'us/op':>7}  result")
    for r in rows:
        if "ratio" in r:
            if r["ratio"] is None:
                res = f"real fallocate: skipped ({r['real_note']})"
            else:
                res = (f"real 4K fallocate {r['real_fallocate_us']:.2f} us median of rounds "
                       f"interleaved with the mock's ({r['real_note']}); ratio of the medians "
                       f"{r['ratio']:.1f}x (target <= 10x: "
                       f"{'met' if r['met'] else 'MISSED'})")
            if r.get("stage2_mapped_before") is not None:
                res += (f"; stage-2 pages {r['stage2_mapped_before']} -> "
                        f"{r['stage2_mapped_after']}")
        else:
            res = (f"peak RSS {r['peak_rss_mb']:.0f} MB (target < 500 MB: "
                   f"{'met' if r['met'] else 'MISSED'}); setup {r['setup_seconds']:.2f} s")
        out(f"{r['workload']:<52} {r['ops']:>9} {r['seconds']:>7.2f} {r['ops_per_s']:>9.0f} "
            f"{r['us_per_op']:>7.2f}  {res}")
    rows.extend(run_architectures(quick, out))
    return rows


#: the architecture rows: benchmark module, and the plugin it needs
ARCH_BENCHES = (("conversion_tdx", "kmock_tdx"), ("conversion_snp", "kmock_snp"),
                ("conversion_cca", "kmock_cca"))


def run_architectures(quick=False, out=print):
    """The TDX, SNP and CCA 4K conversion rows, for each plugin that is installed."""
    import importlib
    import importlib.util

    rows = []
    for module, plugin in ARCH_BENCHES:
        if importlib.util.find_spec(plugin) is None or \
                importlib.util.find_spec(f"kmock.benchmarks.{module}") is None:
            out(f"{module}: skipped ({plugin} is not installed)")
            continue
        rows.extend(importlib.import_module(f"kmock.benchmarks.{module}").run(quick=quick, out=out))
    return rows


if __name__ == "__main__":  # pragma: no cover
    run(quick="--quick" in sys.argv)
