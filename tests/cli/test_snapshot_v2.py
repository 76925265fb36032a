"""Snapshot format 2: overlays per guest_memfd, arch tables, violations placed, 4 TiB."""

import json
import os
import sys
import time

import kmock
from kmock import snapshot
from kmock.hookspecs import hookimpl
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

TiB = 1 << 40
P = 4096
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def demo_snapshot():
    sys.path.insert(0, EXAMPLES)
    import vmm_demo

    k, story = vmm_demo.run(out=lambda s: None)
    try:
        return snapshot.capture(k), story
    finally:
        k.close_all()


def test_demo_snapshot_has_every_overlay_and_places_violations():
    snap, story = demo_snapshot()
    json.dumps(snap)
    assert snap["version"] == 2
    (g,) = snap["guest_memfds"]
    assert g["bindings"] == [{"start": 0, "end": 0x4000, "vm": 0, "as_id": 0, "slot": 0,
                              "gpa": 1 << 32}]
    assert [(m["offset"], m["length"]) for m in g["host_mappings"]] == [(0, 16 << 20)]
    assert [(a["start"], a["end"], a["iova"]) for a in g["iommu"]] == [(0, 0x1000, 1 << 30)]
    assert {(s["start"], s["end"]) for s in g["stage2"]} == {(1, 2), (0x300, 0x301)}
    assert g["private"] == [[0x200, 0xA00]]
    kinds = {v["kind"]: v for v in snap["violations"]}
    assert kinds["stale_iommu_dma"]["at"] == [{"guest_memfd": 0, "page": 0x300}]
    assert kinds["stale_iommu_entry"]["at"] == [{"guest_memfd": 0, "page": 0x200}]
    (i,) = snap["iommufd"]
    (ioas,) = i["ioas"]
    assert ioas["areas"][0]["guest_memfd"] == 0 and ioas["areas"][0]["page"] == 0
    assert len(ioas["domain_leaves"][str(ioas["domains"][0])]) >= 1
    assert any("MAP_GPA_RANGE" in line for line in story)


class ArchPlugin:
    """A plugin adding an RMP-like table keyed by frame and an S-EPT-like one keyed by GPA."""

    @hookimpl
    def kmock_snapshot(self, kernel, snapshot):
        f = next(f for f in kernel.fdtable.files() if f.file_type == "gmem")
        vm = f.vm
        base = f.inode.pfn_base
        snapshot.add_table("demo", "RMP", [[base + 2, base + 4, "private"], [base + 9, base + 10, 0]],
                           space="pfn", legend={"private": "assigned to the guest"})
        snapshot.add_table("demo", "S-EPT", [[(1 << 32) + 5 * P, (1 << 32) + 7 * P, 1]],
                           space="gpa", vm=vm)
        snapshot["demo"]["tdr"] = "ok"


def test_arch_tables_through_the_hook_are_drawable():
    from kmock import picture

    with kmock.Kernel(plugins=[ArchPlugin()]) as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        g = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=16 * P))
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 32, memory_size=16 * P,
            guest_memfd=g))
        snap = snapshot.capture(k)
    demo = snap["arch"]["demo"]
    rmp, sept = demo["tables"]
    assert rmp["space"] == "pfn" and rmp["runs"] == [[rmp["runs"][0][0], rmp["runs"][0][0] + 2,
                                                       "private"]]  # falsy states are gaps
    assert sept["vm"] == 0 and demo["tdr"] == "ok"
    rows = picture.arch_rows(snap, snap["guest_memfds"][0])
    assert [(label, runs) for label, runs, _ in rows] == [
        ("demo RMP", [[2, 4, "private"]]), ("demo S-EPT", [[5, 7, 1]])]
    assert "arch demo RMP (pfn): 0x" in snapshot.format_text(snap)


def test_4_tib_guest_memfd_with_overlays_dumps_in_runs():
    from kmock import picture

    with kmock.Kernel("gmem-attributes-v8") as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        g = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=4 * TiB, flags=K.GUEST_MEMFD_FLAG_MMAP))
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 44,
            memory_size=4 * TiB, guest_memfd=g))
        k.fallocate(g, 1, 3 * TiB, 1 << 30)
        a = G.kvm_memory_attributes2(offset=0x5000, size=P, attributes=0)
        k.ioctl(g, G.KVM_SET_MEMORY_ATTRIBUTES2, a)
        k.memory_failure(g, 2 * TiB)
        m = k.mmap(g, P, 3, 1, 0x5000)
        t0 = time.perf_counter()
        snap = snapshot.capture(k)
        elapsed = time.perf_counter() - t0
        m.close()
    assert elapsed < 1.0
    (gm,) = snap["guest_memfds"]
    assert gm["bindings"][0]["end"] == 1 << 30
    assert gm["poisoned"] == [[(2 * TiB) >> 12, ((2 * TiB) >> 12) + 1]]
    t0 = time.perf_counter()
    fig = picture.figure(snap)
    assert time.perf_counter() - t0 < 5.0
    assert fig.axes
