"""Conformance scenarios of three ioctls a sweep found missing (kmock.kvm.x86_pmu,
kmock.kvm.device, kmock.kvm.x86_vm): KVM_SET_PMU_EVENT_FILTER on the VM fd,
K.KVM_GET_EMULATED_CPUID on /dev/kvm and K.KVM_RESET_DIRTY_RINGS on the VM fd.

Registered into kmock.testing.conformance.SCENARIOS when that module is imported.
Sources: arch/x86/kvm/pmu.c kvm_vm_ioctl_set_pmu_event_filter; arch/x86/kvm/cpuid.c
kvm_dev_ioctl_get_cpuid, sanity_check_entries, __do_cpuid_func_emulated; virt/kvm/kvm_main.c
kvm_vm_ioctl_reset_dirty_pages. Arguments are buffers of more than 1024 bytes: fcntl.ioctl
then hands the kernel the buffer itself, so what the kernel reads past a struct is the
scenario's (zeroed) memory on both sides.
"""

import ctypes

from ..uapi import kvm as K
from ..uapi import x86 as X86
from .conformance import create_vm, open_kvm, scenario

HEAD = ctypes.sizeof(X86.kvm_pmu_event_filter)
ENTRY = ctypes.sizeof(K.kvm_cpuid_entry2)
KVM_CAP_EXT_EMUL_CPUID = 95
KVM_CAP_PMU_EVENT_FILTER = 173
KVM_CAP_DIRTY_LOG_RING = 192
KVM_CAP_DIRTY_LOG_RING_ACQ_REL = 223
KVM_CAP_PMU_EVENT_MASKED_EVENTS = 226


def _u32(buf, off):
    return int.from_bytes(buf[off:off + 4], "little")


def _put(buf, off, value, size=4):
    buf[off:off + size] = value.to_bytes(size, "little")


def pmu_filter(action=0, nevents=0, fixed=0, flags=0, pad=(0, 0, 0, 0), events=()):
    buf = bytearray(4096)
    head = X86.kvm_pmu_event_filter(action=action, nevents=nevents,
                                    fixed_counter_bitmap=fixed, flags=flags)
    for i, p in enumerate(pad):
        head.pad[i] = p
    buf[:HEAD] = bytes(head)
    for i, e in enumerate(events):
        _put(buf, HEAD + 8 * i, e, 8)
    return buf


def masked(select, match=0, mask=0, exclude=False):
    """KVM_PMU_ENCODE_MASKED_ENTRY (uapi asm/kvm.h)."""
    return ((select & 0xFF) | (select & 0xF00) << 24 | (mask & 0xFF) << 56
            | (match & 0xFF) << 8 | (1 << 55 if exclude else 0))


@scenario("x86_pmu_event_filter",
          "KVM_SET_PMU_EVENT_FILTER: the header (EFAULT), action other than ALLOW/DENY then "
          "unknown flags EINVAL, nevents > 300 E2BIG, masked entries with bits outside the "
          "encoding EINVAL; pads and fixed_counter_bitmap unchecked, unmasked junk events "
          "accepted; no vPMU needed; on /dev/kvm and a vCPU")
def x86_pmu_event_filter(sys, rec):
    SET = X86.KVM_SET_PMU_EVENT_FILTER
    kvm = open_kvm(sys, rec)
    rec.call("CHECK_EXTENSION(PMU_EVENT_FILTER)", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION,
             KVM_CAP_PMU_EVENT_FILTER)
    rec.call("CHECK_EXTENSION(PMU_EVENT_MASKED_EVENTS)", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION,
             KVM_CAP_PMU_EVENT_MASKED_EVENTS)
    rec.call("on /dev/kvm", sys.ioctl, kvm, SET, pmu_filter())
    vm = create_vm(sys, rec, kvm)

    def put(label, **kw):
        rec.call(label, sys.ioctl, vm, SET, pmu_filter(**kw))

    rec.call("NULL", sys.ioctl, vm, SET, 0)
    put("allow, no events")
    put("deny, no events", action=1)
    for action in (2, 0xFFFFFFFF):
        put(f"action {action:#x}", action=action)
    put("masked flag, no events", flags=1)
    for flags in (2, 3, 1 << 31):
        put(f"flags {flags:#x}", flags=flags)
    put("nevents 300", nevents=300)
    for n in (301, 0xFFFFFFFF):
        put(f"nevents {n:#x}", nevents=n)
    put("action 2 and flags 2", action=2, flags=2)
    put("action 2 and nevents 301", action=2, nevents=301)
    put("flags 2 and nevents 301", flags=2, nevents=301)
    put("masked junk and nevents 301", flags=1, nevents=301, events=[1 << 16] * 301)
    put("pads set", pad=(1, 2, 3, 0xFFFFFFFF))
    put("fixed bitmap 0xffffffff, no events", fixed=0xFFFFFFFF)
    put("deny fixed 0x7, events", action=1, fixed=7, nevents=2, events=(0xC0, 0x1C2))
    put("unmasked: bit 63 and bit 32 events kept or dropped", nevents=3,
        events=(1 << 63, 1 << 32 | 0x3C, 0x13C))
    put("masked: select/match/mask/exclude", flags=1, nevents=3,
        events=(masked(0xC0, 0, 0xFF), masked(0xC0, 1, 1, True), masked(0x2E, 0x41, 0x4F)))
    put("masked: event select bit 32 (Intel refuses it)", flags=1, nevents=1,
        events=(masked(0x1C0),))
    for bit in (16, 36, 54):
        put(f"masked: bit {bit}", flags=1, nevents=1, events=(1 << bit,))
    put("masked: second of two bad", flags=1, nevents=2, events=(0xC0, 1 << 20))
    put("masked: bad entry beyond nevents", flags=1, nevents=1, events=(0xC0, 1 << 20))
    cpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    put("after a vCPU", nevents=1, events=(0xC0,))
    if cpu is not None:
        rec.call("on a vCPU", sys.ioctl, cpu, SET, pmu_filter())


def cpuid_buf(nent, pad_at=(), head_pad=0):
    buf = bytearray(8 + 256 * ENTRY)
    _put(buf, 0, nent)
    _put(buf, 4, head_pad)
    for i in pad_at:
        buf[8 + i * ENTRY + 28] = 1
    return buf


@scenario("x86_emulated_cpuid",
          "K.KVM_GET_EMULATED_CPUID: nent 0 E2BIG; nent capped at 256; nonzero entry padding "
          "EINVAL; the table (leaf 0 EAX 7, 1 MOVBE, 7 RDPID when RDTSCP) needs one spare "
          "entry (nent 3 E2BIG, nothing written); on a VM fd")
def x86_emulated_cpuid(sys, rec):
    GET = K.KVM_GET_EMULATED_CPUID
    kvm = open_kvm(sys, rec)
    rec.call("CHECK_EXTENSION(EXT_EMUL_CPUID)", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION,
             KVM_CAP_EXT_EMUL_CPUID)
    rec.call("NULL", sys.ioctl, kvm, GET, 0)
    for n in (0, 1, 2, 3):
        buf = cpuid_buf(n)
        before = bytes(buf)
        rec.call(f"nent {n}", sys.ioctl, kvm, GET, buf)
        rec.record(f"nent {n}: buffer unchanged", bytes(buf) == before)
    sup = cpuid_buf(256)
    sys.ioctl(kvm, K.KVM_GET_SUPPORTED_CPUID, sup)
    rdtscp = any(_u32(sup, 8 + i * ENTRY) == 0x80000001 and _u32(sup, 8 + i * ENTRY + 24) >> 27 & 1
                 for i in range(_u32(sup, 0)))
    for n in (4, 300, 0xFFFFFFFF):
        buf = cpuid_buf(n, head_pad=0xABCD)
        rec.call(f"nent {n:#x}", sys.ioctl, kvm, GET, buf)
        got = _u32(buf, 0)
        rec.record(f"nent {n:#x}: nent after", got)
        rec.record(f"nent {n:#x}: header padding kept", _u32(buf, 4))
        rec.record(f"nent {n:#x}: leaves 0 and 1", bytes(buf[8:8 + 2 * ENTRY]).hex())
        leaf7 = K.kvm_cpuid_entry2.from_buffer_copy(buf, 8 + 2 * ENTRY)
        rec.record(f"nent {n:#x}: leaf 7 (function, index, flags, eax, ebx, edx)",
                   (leaf7.function, leaf7.index, leaf7.flags, leaf7.eax, leaf7.ebx, leaf7.edx))
        rec.record(f"nent {n:#x}: leaf 7 ECX is RDPID iff the supported CPUID has RDTSCP",
                   leaf7.ecx == ((1 << 22) if rdtscp else 0))
        rec.record(f"nent {n:#x}: entries past the table untouched",
                   not any(buf[8 + 3 * ENTRY:8 + 4 * ENTRY]))
    rec.call("nent 4, entry 1 padding set", sys.ioctl, kvm, GET, cpuid_buf(4, pad_at=(1,)))
    rec.call("nent 2, entry 1 padding set (EINVAL before E2BIG)", sys.ioctl, kvm, GET,
             cpuid_buf(2, pad_at=(1,)))
    rec.call("nent 4, entry 4 padding set (not checked)", sys.ioctl, kvm, GET,
             cpuid_buf(4, pad_at=(4,)))
    rec.call("nent 0xffffffff, entry 255 padding set", sys.ioctl, kvm, GET,
             cpuid_buf(0xFFFFFFFF, pad_at=(255,)))
    rec.call("nent 0, entry 0 padding set (E2BIG first)", sys.ioctl, kvm, GET,
             cpuid_buf(0, pad_at=(0,)))
    vm = create_vm(sys, rec, kvm)
    rec.call("on a VM", sys.ioctl, vm, GET, cpuid_buf(4))


@scenario("x86_dirty_ring_reset",
          "K.KVM_RESET_DIRTY_RINGS without a dirty ring: EINVAL (argument unread), before and "
          "after a vCPU; the ring capabilities' values; on /dev/kvm and a vCPU")
def x86_dirty_ring_reset(sys, rec):
    kvm = open_kvm(sys, rec)
    for cap, name in ((KVM_CAP_DIRTY_LOG_RING, "DIRTY_LOG_RING"),
                      (KVM_CAP_DIRTY_LOG_RING_ACQ_REL, "DIRTY_LOG_RING_ACQ_REL")):
        rec.call(f"CHECK_EXTENSION({name}) on /dev/kvm", sys.ioctl, kvm,
                 K.KVM_CHECK_EXTENSION, cap)
    rec.call("on /dev/kvm", sys.ioctl, kvm, K.KVM_RESET_DIRTY_RINGS, 0)
    vm = create_vm(sys, rec, kvm)
    rec.call("CHECK_EXTENSION(DIRTY_LOG_RING) on the VM", sys.ioctl, vm,
             K.KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING)
    rec.call("no ring", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    rec.call("no ring, argument 0x1234", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0x1234)
    cpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    rec.call("no ring, after a vCPU", sys.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0)
    if cpu is not None:
        rec.call("on a vCPU", sys.ioctl, cpu, K.KVM_RESET_DIRTY_RINGS, 0)
