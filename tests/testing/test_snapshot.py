"""kmock.snapshot: the state as runs, JSON-able, at a cost of runs not pages."""

import json
import os
import time

import kmock
from kmock import snapshot
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

TiB = 1 << 40


def _setup(k, size, flags=0, vm_type=K.KVM_X86_SW_PROTECTED_VM):
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, vm_type)
    g = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=size, flags=flags))
    region = K.kvm_userspace_memory_region2(
        slot=3, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 32, memory_size=size,
        userspace_addr=1 << 46, guest_memfd=g, guest_memfd_offset=0)
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region)
    return kvm, vm, g


def test_runs_of_a_4_tib_guest_memfd_quickly():
    k = kmock.Kernel("gmem-attributes-v8")
    try:
        _, vm, g = _setup(k, 4 * TiB, flags=K.GUEST_MEMFD_FLAG_MMAP)
        k.fallocate(g, 1, 0x10000, 0x3000)
        k.fallocate(g, 1, 3 * TiB, 1 << 21)
        a = G.kvm_memory_attributes2(size=0x2000, attributes=0)
        a.offset = 0x11000
        k.ioctl(g, G.KVM_SET_MEMORY_ATTRIBUTES2, a)  # shared in the middle
        k.memory_failure(g, 0x12000)
        m = k.mmap(g, 0x1000, 3, 1, 0x11000)
        pin = k.gup_pin(m, 0, 0x1000)
        t0 = time.perf_counter()
        snap = snapshot.capture(k)
        assert time.perf_counter() - t0 < 1.0  # runs, not 2^30 pages
        json.dumps(snap)
        (gm,) = snap["guest_memfds"]
        P = 1 << 30  # pages in 4 TiB
        assert gm["size"] == 4 * TiB and snap["version"] == snapshot.VERSION
        assert gm["private"] == [[0, 0x11], [0x13, P]]
        assert gm["allocated"] == [[0x10, 0x13], [3 * TiB >> 12, (3 * TiB >> 12) + 512]]
        assert gm["pinned"] == [[0x11, 0x12, 1]]
        assert gm["poisoned"] == [[0x12, 0x13]]
        assert gm["host_mappings"] == [{"offset": 0x11000, "length": 0x1000, "prot": 3,
                                        "address": m.address}]
        (v,) = snap["vms"]
        assert v["memslots"] == [{"as_id": 0, "slot": 3, "gpa": 1 << 32, "size": 4 * TiB,
                                  "flags": K.KVM_MEM_GUEST_MEMFD, "hva": 1 << 46,
                                  "guest_memfd": gm["id"], "guest_memfd_offset": 0}]
        assert v["vcpus"] == [] and v["stage2"] == []
        text = snapshot.format_text(snap)
        assert "private:   0x0-0x11, 0x13-0x40000000" in text
        assert "poisoned:  0x12-0x13" in text
        pin.unpin()
        m.close()
    finally:
        k.close_all()


def test_vm_attributes_stage2_vcpus_and_violations():
    k = kmock.Kernel()
    try:
        _, vm, g = _setup(k, 1 << 21)
        attrs = K.kvm_memory_attributes(address=(1 << 32) + 0x1000, size=0x3000,
                                        attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, attrs)
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        guest = k.vm(vm).vcpus[0].guest
        guest.write((1 << 32) + 0x1000, b"x", private=True)
        guest.hlt()
        k.ioctl(vcpu, K.KVM_RUN, 0)
        k.violations.append({"kind": "example", "gpa": 0x1000})
        snap = snapshot.capture(k)
        (v,) = snap["vms"]
        assert v["private_gfns"] == [[(1 << 20) + 1, (1 << 20) + 4]]
        assert v["vcpus"] == [0]
        assert [s[0] for s in v["stage2"]] == [(1 << 32) + 0x1000]  # one private leaf
        (viol,) = snap["violations"]  # format 2: a record, its text and where it hit
        assert viol["kind"] == "example" and viol["gpa"] == 0x1000
        assert viol["text"] == str({"kind": "example", "gpa": 0x1000}) and viol["at"] == []
    finally:
        k.close_all()
