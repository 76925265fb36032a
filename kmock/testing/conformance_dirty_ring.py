"""Conformance scenarios of the KVM dirty ring (kmock.kvm.dirty_ring): KVM_ENABLE_CAP of
K.KVM_CAP_DIRTY_LOG_RING(_ACQ_REL) on the VM, the ring's mmap on the vCPU fd, KVM_RESET_DIRTY_RINGS,
and a real guest write that the ring records.

Registered into kmock.testing.conformance.SCENARIOS when that module is imported.
Sources: virt/kvm/kvm_main.c kvm_vm_ioctl_enable_cap_generic,
kvm_vm_ioctl_enable_dirty_log_ring, kvm_vcpu_mmap, kvm_page_in_dirty_ring,
kvm_vm_ioctl_reset_dirty_pages, kvm_get_dirty_log_protect, mark_page_dirty_in_slot;
virt/kvm/dirty_ring.c kvm_dirty_ring_push, kvm_dirty_ring_reset.
"""

import ctypes
import mmap

from ..uapi import kvm as K
from .conformance import create_vm, open_kvm, scenario

RING_PGOFF = K.KVM_DIRTY_LOG_PAGE_OFFSET
PAGE = 4096
RW = mmap.PROT_READ | mmap.PROT_WRITE


def enable(sys, rec, fd, label, cap, a0, flags=0):
    e = K.kvm_enable_cap(cap=cap, flags=flags)
    e.args[0] = a0
    return rec.call(label, sys.ioctl, fd, K.KVM_ENABLE_CAP, e)


def _ring_entries(m, n):
    """(flags, slot, offset) of the first ``n`` struct kvm_dirty_gfn of a ring mapping."""
    out = []
    for i in range(n):
        b = bytes(m[16 * i:16 * i + 16])
        out.append((int.from_bytes(b[0:4], "little"), int.from_bytes(b[4:8], "little"),
                    int.from_bytes(b[8:16], "little")))
    return out


@scenario("dirty_ring_enable",
          "KVM_ENABLE_CAP(DIRTY_LOG_RING / _ACQ_REL): the size (a power of two, at least a page "
          "and the reserved entries, at most the advertised maximum), once, before any vCPU; "
          "flags; the other ring cap after one; DIRTY_LOG_RING_WITH_BITMAP; the bitmap ioctls "
          "with a ring; KVM_RESET_DIRTY_RINGS of empty rings")
def dirty_ring_enable(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("CHECK_EXTENSION(DIRTY_LOG_RING_WITH_BITMAP) on /dev/kvm", sys.ioctl, kvm,
             K.KVM_CHECK_EXTENSION, K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP)
    for size in (0, 16, 1024, 2048, 4095, 4096 + 16, 3 * 4096, 4096, 8192, 1 << 20,
                 1 << 21, 1 << 31, 1 << 32):
        vm = create_vm(sys, rec, kvm, label=f"size {size:#x}: KVM_CREATE_VM")
        enable(sys, rec, vm, f"size {size:#x}", K.KVM_CAP_DIRTY_LOG_RING, size)
        sys.close(vm)
    vm = create_vm(sys, rec, kvm, label="ACQ_REL 4096: KVM_CREATE_VM")
    enable(sys, rec, vm, "ACQ_REL 4096", K.KVM_CAP_DIRTY_LOG_RING_ACQ_REL, 4096)
    enable(sys, rec, vm, "ACQ_REL 4096 again", K.KVM_CAP_DIRTY_LOG_RING_ACQ_REL, 4096)
    enable(sys, rec, vm, "then RING 4096", K.KVM_CAP_DIRTY_LOG_RING, 4096)
    enable(sys, rec, vm, "then RING 8192", K.KVM_CAP_DIRTY_LOG_RING, 8192)
    enable(sys, rec, vm, "then RING 0", K.KVM_CAP_DIRTY_LOG_RING, 0)
    enable(sys, rec, vm, "WITH_BITMAP after the ring", K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP, 0)
    rec.call("CHECK_EXTENSION(DIRTY_LOG_RING_WITH_BITMAP) on the VM", sys.ioctl, vm,
             K.KVM_CHECK_EXTENSION, K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP)
    rec.call("reset, ring but no vCPU", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    sys.close(vm)
    vm = create_vm(sys, rec, kvm, label="RING then ACQ_REL: KVM_CREATE_VM")
    enable(sys, rec, vm, "RING 8192", K.KVM_CAP_DIRTY_LOG_RING, 8192)
    enable(sys, rec, vm, "then ACQ_REL 8192", K.KVM_CAP_DIRTY_LOG_RING_ACQ_REL, 8192)
    sys.close(vm)
    vm = create_vm(sys, rec, kvm, label="flags: KVM_CREATE_VM")
    enable(sys, rec, vm, "flags 1, 4096", K.KVM_CAP_DIRTY_LOG_RING, 4096, flags=1)
    enable(sys, rec, vm, "flags 1, WITH_BITMAP", K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP, 0, flags=1)
    sys.close(vm)
    vm = create_vm(sys, rec, kvm, label="WITH_BITMAP first: KVM_CREATE_VM")
    enable(sys, rec, vm, "WITH_BITMAP without a ring", K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP, 0)
    sys.close(vm)
    vm = create_vm(sys, rec, kvm, label="after a vCPU: KVM_CREATE_VM")
    cpu = rec.call("after a vCPU: KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    enable(sys, rec, vm, "after a vCPU: RING 4096", K.KVM_CAP_DIRTY_LOG_RING, 4096)
    enable(sys, rec, vm, "after a vCPU: RING 3000", K.KVM_CAP_DIRTY_LOG_RING, 3000)
    rec.call("after a vCPU: reset (no ring)", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    if cpu is not None:
        sys.close(cpu)
    sys.close(vm)
    # the bitmap ioctls of a VM with a ring
    vm = create_vm(sys, rec, kvm, label="bitmap ioctls: KVM_CREATE_VM")
    enable(sys, rec, vm, "bitmap ioctls: RING 4096", K.KVM_CAP_DIRTY_LOG_RING, 4096)
    mem = mmap.mmap(-1, 0x10000)
    uaddr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    region = K.kvm_userspace_memory_region(slot=0, flags=K.KVM_MEM_LOG_DIRTY_PAGES,
                                           guest_phys_addr=0x100000, memory_size=0x10000,
                                           userspace_addr=uaddr)
    rec.call("bitmap ioctls: logged memslot", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    bits = ctypes.create_string_buffer(64)
    log = K.kvm_dirty_log(slot=0, dirty_bitmap=ctypes.addressof(bits))
    rec.call("KVM_GET_DIRTY_LOG with a ring", sys.ioctl, vm, K.KVM_GET_DIRTY_LOG, log)
    log = K.kvm_dirty_log(slot=0x7FFF, dirty_bitmap=ctypes.addressof(bits))
    rec.call("KVM_GET_DIRTY_LOG with a ring, bad slot", sys.ioctl, vm, K.KVM_GET_DIRTY_LOG, log)
    clear = K.kvm_clear_dirty_log(slot=0, num_pages=16, first_page=0,
                                  dirty_bitmap=ctypes.addressof(bits))
    rec.call("KVM_CLEAR_DIRTY_LOG with a ring", sys.ioctl, vm, K.KVM_CLEAR_DIRTY_LOG, clear)
    cpus = [rec.call(f"bitmap ioctls: KVM_CREATE_VCPU {i}", sys.ioctl, vm, K.KVM_CREATE_VCPU, i)
            for i in (0, 1)]
    rec.call("reset, two empty rings", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    rec.call("reset, argument 0x1234", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0x1234)
    for c in cpus:
        if c is not None:
            sys.close(c)
    sys.close(vm)
    del mem


@scenario("dirty_ring_mmap",
          "mmap of the vCPU's dirty ring (page offset 64, x86): MAP_SHARED without PROT_EXEC "
          "when the first or the last page of the mapping is a ring page, anything else is "
          "not checked; a fresh ring reads as zeros; without a ring the offset is not special")
def dirty_ring_mmap(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm, label="no ring: KVM_CREATE_VM")
    cpu = rec.call("no ring: KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if cpu is not None:
        rec.call("no ring: offset 64 pages, MAP_PRIVATE", sys.mmap, cpu, PAGE, mmap.PROT_READ,
                 mmap.MAP_PRIVATE, RING_PGOFF * PAGE)
        rec.call("no ring: offset 64 pages, PROT_EXEC", sys.mmap, cpu, PAGE,
                 RW | mmap.PROT_EXEC, mmap.MAP_SHARED, RING_PGOFF * PAGE)
        sys.close(cpu)
    sys.close(vm)
    size = 2 * PAGE
    vm = create_vm(sys, rec, kvm, label="ring: KVM_CREATE_VM")
    enable(sys, rec, vm, "ring: RING 8192", K.KVM_CAP_DIRTY_LOG_RING, size)
    cpu = rec.call("ring: KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if cpu is None:
        return
    at = RING_PGOFF * PAGE
    m = rec.call("ring, MAP_SHARED RW", sys.mmap, cpu, size, RW, mmap.MAP_SHARED, at)
    if m is not None:
        rec.record("fresh ring: all zero", bytes(m[0:size]) == bytes(size))
        m.close()
    rec.call("ring, MAP_SHARED PROT_READ", sys.mmap, cpu, size, mmap.PROT_READ,
             mmap.MAP_SHARED, at)
    rec.call("ring, MAP_PRIVATE", sys.mmap, cpu, size, RW, mmap.MAP_PRIVATE, at)
    rec.call("ring, MAP_PRIVATE PROT_READ", sys.mmap, cpu, size, mmap.PROT_READ,
             mmap.MAP_PRIVATE, at)
    rec.call("ring, PROT_EXEC", sys.mmap, cpu, size, RW | mmap.PROT_EXEC, mmap.MAP_SHARED, at)
    rec.call("ring second page, MAP_PRIVATE", sys.mmap, cpu, PAGE, mmap.PROT_READ,
             mmap.MAP_PRIVATE, at + PAGE)
    rec.call("page 63 + ring's first, MAP_PRIVATE", sys.mmap, cpu, 2 * PAGE, mmap.PROT_READ,
             mmap.MAP_PRIVATE, at - PAGE)
    rec.call("past the ring, MAP_PRIVATE", sys.mmap, cpu, PAGE, mmap.PROT_READ,
             mmap.MAP_PRIVATE, at + size)
    rec.call("pages 0..66 (spans the ring), MAP_PRIVATE", sys.mmap, cpu, at + size + PAGE,
             mmap.PROT_READ, mmap.MAP_PRIVATE, 0)
    rec.call("twice the ring, MAP_SHARED", sys.mmap, cpu, 2 * size, RW, mmap.MAP_SHARED, at)
    rec.call("reset, one empty ring", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    sys.close(cpu)
    sys.close(vm)


@scenario("dirty_ring_guest_write",
          "a guest write to a dirty-logged memslot with a 8192-byte ring: one entry (F_DIRTY, "
          "slot as_id << 16 | id, page offset in the slot); a reset before the VMM marks it "
          "F_RESET resets 0, after it 1 and clears its flags (slot and offset stay). The real "
          "guest runs `mov [0x1000], al; hlt` at the reset vector (code in an unlogged "
          "memslot); kmock's scripted guest writes the same byte and halts")
def dirty_ring_guest_write(sys, rec):
    code = mmap.mmap(-1, 0x10000)
    code[0xFFF0:0xFFF4] = b"\xA2\x00\x10\xF4"  # mov [0x1000], al; hlt (real mode, DS base 0)
    data = mmap.mmap(-1, 0x10000)
    kvm = open_kvm(sys, rec)
    run_size = sys.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
    vm = create_vm(sys, rec, kvm)
    enable(sys, rec, vm, "RING 8192", K.KVM_CAP_DIRTY_LOG_RING, 2 * PAGE)
    for slot, gpa, mem, flags in ((0, 0xFFFF0000, code, 0),
                                  (1, 0, data, K.KVM_MEM_LOG_DIRTY_PAGES)):
        region = K.kvm_userspace_memory_region(
            slot=slot, flags=flags, guest_phys_addr=gpa, memory_size=0x10000,
            userspace_addr=ctypes.addressof(ctypes.c_char.from_buffer(mem)))
        rec.call(f"memslot {slot}", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    cpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if cpu is None:
        return
    if hasattr(sys, "vm"):  # kmock: the scripted guest does what the real code does
        g = sys.vm(vm).vcpus[0].guest
        g.write(0x1000, b"\0")
        g.hlt()
    run_map = sys.mmap(cpu, run_size, RW, mmap.MAP_SHARED)
    run = K.kvm_run.from_address(run_map.address)
    ring = rec.call("mmap the ring", sys.mmap, cpu, 2 * PAGE, RW, mmap.MAP_SHARED,
                    RING_PGOFF * PAGE)
    rec.call("KVM_RUN", sys.ioctl, cpu, K.KVM_RUN, 0)
    rec.record("exit_reason", run.exit_reason)
    if ring is None:
        return
    rec.record("ring after the write", _ring_entries(ring, 2))
    rec.call("reset, nothing harvested", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    rec.record("ring after the reset of nothing", _ring_entries(ring, 2))
    ring[0:4] = (2).to_bytes(4, "little")  # the VMM harvested entry 0: flags = F_RESET
    rec.call("reset, entry 0 harvested", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    rec.record("ring after the reset", _ring_entries(ring, 2))
    rec.call("reset again", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    bits = ctypes.create_string_buffer(64)
    rec.call("KVM_GET_DIRTY_LOG", sys.ioctl, vm, K.KVM_GET_DIRTY_LOG,
             K.kvm_dirty_log(slot=1, dirty_bitmap=ctypes.addressof(bits)))
    ring.close()
    run_map.close()
    sys.close(cpu)
    sys.close(vm)
    del code, data
