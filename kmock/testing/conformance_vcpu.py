"""Conformance scenarios of the x86 vCPU register and state ioctls (kmock.kvm.x86_vcpu).

Registered into kmock.testing.conformance.SCENARIOS when that module is imported. They
compare a new vCPU's registers, set/get round trips, the validation errnos and the
E2BIG protocols between the real kernel and the mock (profile ``host``, whose MSR
lists, TSC frequency and initial XSAVE image are probed from the real kernel).
Sources: arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl and kvm_arch_dev_ioctl (docs/vcpu-state.md).
"""

import ctypes
import mmap

from ..uapi import kvm as K
from ..uapi import x86 as X
from .conformance import create_vm, open_kvm, scenario, vm_with_vcpu
from .conformance_x86_vm import enable

P = 4096
ENTRY = ctypes.sizeof(K.kvm_cpuid_entry2)
MSR_TSC = 0x10


def _fields(s):
    """A ctypes struct as nested tuples of its fields (readable in a diff)."""
    if isinstance(s, ctypes.Array):
        return tuple(_fields(x) for x in s)
    if isinstance(s, (ctypes.Structure, ctypes.Union)):
        return tuple((name, _fields(getattr(s, name))) for name, *_ in s._fields_)
    return s


def _get(sys, rec, label, fd, req, ctype):
    s = ctype()
    if rec.call(label, sys.ioctl, fd, req, s) is not None:
        rec.record(f"{label}: value", _fields(s))
    return s


def msrs_buf(entries):
    buf = bytearray(8 + 16 * max(len(entries), 1))
    buf[0:4] = len(entries).to_bytes(4, "little")
    for i, (idx, data) in enumerate(entries):
        buf[8 + 16 * i:12 + 16 * i] = idx.to_bytes(4, "little")
        buf[16 + 16 * i:24 + 16 * i] = data.to_bytes(8, "little")
    return buf


def msrs_values(buf, n):
    return [int.from_bytes(buf[16 + 16 * i:24 + 16 * i], "little") for i in range(n)]


def msr_list(sys, rec, kvm, req, name, n=1024):
    buf = bytearray(4 + 4 * n)
    buf[0:4] = n.to_bytes(4, "little")
    if rec.call(f"{name} nmsrs={n}", sys.ioctl, kvm, req, buf) is None:
        return ()
    count = int.from_bytes(buf[0:4], "little")
    return tuple(int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "little") for i in range(count))


def get_msrs(sys, rec, label, vcpu, indices):
    buf = msrs_buf([(i, 0) for i in indices])
    n = rec.call(label, sys.ioctl, vcpu, X.KVM_GET_MSRS, buf)
    return msrs_values(buf, n or 0)


def set_msrs(sys, rec, label, vcpu, entries):
    return rec.call(label, sys.ioctl, vcpu, X.KVM_SET_MSRS, msrs_buf(entries))


def supported_cpuid(sys, kvm):
    buf = bytearray(8 + 256 * ENTRY)
    buf[0:4] = (256).to_bytes(4, "little")
    sys.ioctl(kvm, K.KVM_GET_SUPPORTED_CPUID, buf)
    n = int.from_bytes(buf[0:4], "little")
    return buf[:8 + n * ENTRY], n


def cpuid_buf(nent, entries=b""):
    buf = bytearray(8 + max(nent, 1) * ENTRY)
    buf[0:4] = nent.to_bytes(4, "little")
    buf[8:8 + len(entries)] = entries
    return buf


def cpuid_entries(entries):
    """The kvm_cpuid_entry2 array of (function, index, flags, eax, ebx, ecx, edx) tuples."""
    out = bytearray()
    for fn, index, flags, eax, ebx, ecx, edx in entries:
        out += bytes(K.kvm_cpuid_entry2(function=fn, index=index, flags=flags, eax=eax,
                                        ebx=ebx, ecx=ecx, edx=edx))
    return bytes(out)


def cpuid_table(entries):
    """A struct kvm_cpuid2 holding ``entries`` (tuples, see cpuid_entries)."""
    return cpuid_buf(len(entries), cpuid_entries(entries))


@scenario("fact_x86_vcpu_initial_state",
          "the registers of a new vCPU 0 and vCPU 1 (no in-kernel LAPIC): REGS, SREGS, FPU, "
          "MP_STATE, VCPU_EVENTS, DEBUGREGS, XCRS, XSAVE, TSC_KHZ, CPUID2 and the MSRs of "
          "KVM_GET_MSR_INDEX_LIST")
def fact_x86_vcpu_initial_state(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    indices = msr_list(sys, rec, kvm, X.KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST")
    for vid in (0, 1):
        v = rec.call(f"KVM_CREATE_VCPU {vid}", sys.ioctl, vm, K.KVM_CREATE_VCPU, vid)
        if v is None:
            return
        _get(sys, rec, f"vCPU {vid} KVM_GET_REGS", v, X.KVM_GET_REGS, K.kvm_regs)
        _get(sys, rec, f"vCPU {vid} KVM_GET_SREGS", v, X.KVM_GET_SREGS, X.kvm_sregs)
        _get(sys, rec, f"vCPU {vid} KVM_GET_FPU", v, X.KVM_GET_FPU, X.kvm_fpu)
        _get(sys, rec, f"vCPU {vid} KVM_GET_MP_STATE", v, X.KVM_GET_MP_STATE, X.kvm_mp_state)
        _get(sys, rec, f"vCPU {vid} KVM_GET_VCPU_EVENTS", v, X.KVM_GET_VCPU_EVENTS,
             X.kvm_vcpu_events)
        _get(sys, rec, f"vCPU {vid} KVM_GET_DEBUGREGS", v, X.KVM_GET_DEBUGREGS, X.kvm_debugregs)
        _get(sys, rec, f"vCPU {vid} KVM_GET_XCRS", v, X.KVM_GET_XCRS, X.kvm_xcrs)
        xs = bytearray(4096)
        rec.call(f"vCPU {vid} KVM_GET_XSAVE", sys.ioctl, v, X.KVM_GET_XSAVE, xs)
        rec.record(f"vCPU {vid} XSAVE image", bytes(xs))
        size = sys.ioctl(vm, K.KVM_CHECK_EXTENSION, X.KVM_CAP_XSAVE2)
        xs2 = bytearray(max(size, 4096))
        rec.call(f"vCPU {vid} KVM_GET_XSAVE2", sys.ioctl, v, X.KVM_GET_XSAVE2, xs2)
        rec.record(f"vCPU {vid} XSAVE2 image equals XSAVE", bytes(xs2[:4096]) == bytes(xs))
        rec.call(f"vCPU {vid} KVM_GET_TSC_KHZ", sys.ioctl, v, X.KVM_GET_TSC_KHZ, 0)
        buf = cpuid_buf(4)
        rec.call(f"vCPU {vid} KVM_GET_CPUID2 nent=4", sys.ioctl, v, X.KVM_GET_CPUID2, buf)
        rec.record(f"vCPU {vid} nent after", int.from_bytes(buf[0:4], "little"))
        values = get_msrs(sys, rec, f"vCPU {vid} KVM_GET_MSRS of the index list", v, indices)
        rec.record(f"vCPU {vid} MSR values but the TSC",
                   [(hex(i), hex(d)) for i, d in zip(indices, values) if i != MSR_TSC])
        rec.record(f"vCPU {vid} the TSC counts", [d != 0 for i, d in zip(indices, values)
                                                 if i == MSR_TSC])


def _flat_pm_sregs(sregs, long_mode=False):
    """Protected mode with flat segments (long mode: PAE paging, EFER.LME|LMA, CS.L)."""
    for name in X.SREGS_SEGMENTS[:6]:
        seg = getattr(sregs, name)
        seg.base, seg.limit, seg.g, seg.db, seg.s, seg.present = 0, 0xFFFFFFFF, 1, 1, 1, 1
        seg.type, seg.selector = (0xB, 8) if name == "cs" else (0x3, 16)
    sregs.cr0 = 0x11 | (0x80000000 if long_mode else 0)
    sregs.cr4 = X.X86_CR4_PAE if long_mode else 0
    sregs.cr3 = 0x9000 if long_mode else 0
    sregs.efer = (X.EFER_LME | X.EFER_LMA) if long_mode else 0
    if long_mode:
        sregs.cs.l, sregs.cs.db = 1, 0
    sregs.gdt.base, sregs.gdt.limit = 0x500, 0x27
    sregs.idt.base, sregs.idt.limit = 0x1000, 0xFFF
    return sregs


@scenario("fact_x86_vcpu_round_trips",
          "what a VMM sets is read back: REGS (RFLAGS bit 1 forced), SREGS (flat protected "
          "mode, long mode, CR2/CR8, a queued interrupt), FPU, DEBUGREGS, XCRS after "
          "KVM_SET_CPUID2, VCPU_EVENTS, XSAVE, MSRs, TSC_KHZ, CPUID2, SIGNAL_MASK")
def fact_x86_vcpu_round_trips(sys, rec):
    kvm, vm, v = vm_with_vcpu(sys, rec)
    if v is None:
        return
    regs = K.kvm_regs()
    for i, (name, _) in enumerate(K.kvm_regs._fields_):
        setattr(regs, name, 0x1111111111111111 * (i % 15 + 1))
    regs.rip, regs.rflags = 0x100000, 0x200
    rec.call("KVM_SET_REGS", sys.ioctl, v, X.KVM_SET_REGS, regs)
    _get(sys, rec, "KVM_GET_REGS after SET_REGS", v, X.KVM_GET_REGS, K.kvm_regs)

    sregs = _get(sys, rec, "KVM_GET_SREGS", v, X.KVM_GET_SREGS, X.kvm_sregs)
    _flat_pm_sregs(sregs)
    sregs.cr2, sregs.cr8 = 0xDEAD000, 5
    rec.call("KVM_SET_SREGS flat protected mode", sys.ioctl, v, X.KVM_SET_SREGS, sregs)
    _get(sys, rec, "KVM_GET_SREGS after protected mode", v, X.KVM_GET_SREGS, X.kvm_sregs)
    _flat_pm_sregs(sregs, long_mode=True)
    sregs.cr8 = 0x10  # reserved bits: kvm_set_cr8 fails, its error is ignored
    rec.call("KVM_SET_SREGS long mode, cr8=0x10", sys.ioctl, v, X.KVM_SET_SREGS, sregs)
    _get(sys, rec, "KVM_GET_SREGS after long mode", v, X.KVM_GET_SREGS, X.kvm_sregs)
    sregs.interrupt_bitmap[1] = 1 << 3  # vector 67
    rec.call("KVM_SET_SREGS with interrupt 67 pending", sys.ioctl, v, X.KVM_SET_SREGS, sregs)
    got = _get(sys, rec, "KVM_GET_SREGS with the interrupt", v, X.KVM_GET_SREGS, X.kvm_sregs)
    rec.record("interrupt_bitmap", list(got.interrupt_bitmap))
    _get(sys, rec, "KVM_GET_VCPU_EVENTS with the interrupt", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)

    fpu = X.kvm_fpu()
    fpu.fcw, fpu.fsw, fpu.ftwx, fpu.last_opcode = 0x27F, 0x3800, 0x81, 0x1D
    fpu.last_ip, fpu.last_dp, fpu.mxcsr = 0x4000, 0x5000, 0x1F81
    fpu.fpr[1][3] = 0x42
    fpu.xmm[15][15] = 0x99
    rec.call("KVM_SET_FPU", sys.ioctl, v, X.KVM_SET_FPU, fpu)
    _get(sys, rec, "KVM_GET_FPU after SET_FPU", v, X.KVM_GET_FPU, X.kvm_fpu)
    xs = bytearray(4096)
    rec.call("KVM_GET_XSAVE after SET_FPU", sys.ioctl, v, X.KVM_GET_XSAVE, xs)
    rec.record("XSAVE image after SET_FPU", bytes(xs))
    xs[512] = 3  # XSTATE_BV = FP | SSE: the legacy area now counts
    xs[0:2] = (0x37E).to_bytes(2, "little")
    xs[160 + 16] = 0x77  # xmm1
    rec.call("KVM_SET_XSAVE FP|SSE, fcw 0x37e, xmm1", sys.ioctl, v, X.KVM_SET_XSAVE, xs)
    xs2 = bytearray(4096)
    rec.call("KVM_GET_XSAVE after SET_XSAVE", sys.ioctl, v, X.KVM_GET_XSAVE, xs2)
    rec.record("XSAVE image after SET_XSAVE", bytes(xs2))
    _get(sys, rec, "KVM_GET_FPU after SET_XSAVE", v, X.KVM_GET_FPU, X.kvm_fpu)

    dbg = X.kvm_debugregs(dr6=0xFFFF4FF0, dr7=0x401)
    dbg.db[0], dbg.db[3] = 0x1000, 0xFFFFFFFFFFFFF000
    rec.call("KVM_SET_DEBUGREGS", sys.ioctl, v, X.KVM_SET_DEBUGREGS, dbg)
    _get(sys, rec, "KVM_GET_DEBUGREGS after SET", v, X.KVM_GET_DEBUGREGS, X.kvm_debugregs)

    ev = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_NMI_PENDING | X.KVM_VCPUEVENT_VALID_SHADOW)
    ev.exception.injected, ev.exception.nr = 1, 13
    ev.exception.has_error_code, ev.exception.error_code = 1, 0x18
    ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.shadow = 1, 0x30, 1
    ev.nmi.pending, ev.nmi.masked = 1, 1
    rec.call("KVM_SET_VCPU_EVENTS #GP(0x18), interrupt 0x30, NMI", sys.ioctl, v,
             X.KVM_SET_VCPU_EVENTS, ev)
    _get(sys, rec, "KVM_GET_VCPU_EVENTS after SET", v, X.KVM_GET_VCPU_EVENTS, X.kvm_vcpu_events)
    ev.flags, ev.nmi.pending, ev.nmi.masked = X.KVM_VCPUEVENT_VALID_NMI_PENDING, 5, 0
    ev.exception.injected, ev.interrupt.injected, ev.nmi.injected = 0, 0, 0
    rec.call("KVM_SET_VCPU_EVENTS 5 NMIs pending", sys.ioctl, v, X.KVM_SET_VCPU_EVENTS, ev)
    _get(sys, rec, "KVM_GET_VCPU_EVENTS after 5 NMIs", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)
    regs.rflags = 2
    rec.call("KVM_SET_REGS drops a pending exception", sys.ioctl, v, X.KVM_SET_REGS, regs)

    entries = [(0x174, 0x10), (0xC0000081, 0x0023001000000000), (0xC0000082, 0xFFFFFFFF81000000),
               (0xC0000084, 0x47700), (0x277, 0x0007010600070106), (0x175, 0x8000000000001000)]
    rec.call("KVM_SET_MSRS 6 MSRs", sys.ioctl, v, X.KVM_SET_MSRS, msrs_buf(entries))
    vals = get_msrs(sys, rec, "KVM_GET_MSRS the same 6", v, [i for i, _ in entries])
    rec.record("MSR values", [hex(x) for x in vals])

    for khz in (0, 2100500, 2300000):
        rec.call(f"KVM_SET_TSC_KHZ {khz}", sys.ioctl, v, X.KVM_SET_TSC_KHZ, khz)
        rec.call(f"KVM_GET_TSC_KHZ after {khz}", sys.ioctl, v, X.KVM_GET_TSC_KHZ, 0)
    mask = bytearray(12)
    mask[0:4] = (8).to_bytes(4, "little")
    mask[4] = 0xFF
    rec.call("KVM_SET_SIGNAL_MASK len 8", sys.ioctl, v, X.KVM_SET_SIGNAL_MASK, mask)
    rec.call("KVM_SET_SIGNAL_MASK NULL", sys.ioctl, v, X.KVM_SET_SIGNAL_MASK, 0)

    sup, _ = supported_cpuid(sys, kvm)
    rec.call("KVM_SET_CPUID2 the supported table", sys.ioctl, v, X.KVM_SET_CPUID2, bytearray(sup))
    buf = cpuid_buf(256)
    rec.call("KVM_GET_CPUID2 nent=256", sys.ioctl, v, X.KVM_GET_CPUID2, buf)
    # (the table read back is not compared: KVM rewrites runtime bits, and the PVM probe
    # host rewrites much more; docs/vcpu-state.md)
    xcrs = X.kvm_xcrs(nr_xcrs=1)
    xcrs.xcrs[0].value = 0x7
    rec.call("KVM_SET_XCRS XCR0=7", sys.ioctl, v, X.KVM_SET_XCRS, xcrs)
    _get(sys, rec, "KVM_GET_XCRS after SET", v, X.KVM_GET_XCRS, X.kvm_xcrs)


@scenario("fact_x86_vcpu_validation",
          "the errno of bad input: SREGS (CR0/CR4/EFER/CS.L/CR3/APIC base), VCPU_EVENTS flags "
          "and vectors, MP_STATE values, DEBUGREGS, XCRS, XSAVE headers, TSC_KHZ, SIGNAL_MASK, "
          "NULL pointers, a forked child")
def fact_x86_vcpu_validation(sys, rec):
    kvm, vm, v = vm_with_vcpu(sys, rec)
    if v is None:
        return
    good = X.kvm_sregs()
    sys.ioctl(v, X.KVM_GET_SREGS, good)

    def sregs_case(label, **changes):
        s = X.kvm_sregs.from_buffer_copy(good)
        for k, val in changes.items():
            if k == "cs_l":
                s.cs.l = val
            else:
                setattr(s, k, val)
        rec.call(f"KVM_SET_SREGS {label}", sys.ioctl, v, X.KVM_SET_SREGS, s)

    sregs_case("cr0 bit 32", cr0=good.cr0 | 1 << 32)
    sregs_case("cr0 NW without CD", cr0=0x20000011)
    sregs_case("cr0 PG without PE", cr0=0x80000010)
    sregs_case("cr0 PG|PE (32-bit paging)", cr0=0x80000011)
    sregs_case("EFER.LMA outside long mode", efer=X.EFER_LMA)
    sregs_case("CS.L outside long mode", cs_l=1)
    sregs_case("LME|PG without PAE", cr0=0x80000011, efer=X.EFER_LME | X.EFER_LMA)
    sregs_case("LME|PG|PAE without LMA", cr0=0x80000011, cr4=X.X86_CR4_PAE, efer=X.EFER_LME)
    sregs_case("long mode, cr3 above MAXPHYADDR 36", cr0=0x80000011, cr4=X.X86_CR4_PAE,
               efer=X.EFER_LME | X.EFER_LMA, cr3=1 << 40)
    sregs_case("EFER.LME alone", efer=X.EFER_LME)
    for bit in (0, 3, 5, 7, 9, 10, 11, 13, 16, 17, 18, 20, 21, 22, 24, 31, 40):
        sregs_case(f"cr4 bit {bit} without CPUID", cr4=1 << bit)
    sregs_case("apic_base reserved bit 0", apic_base=good.apic_base | 1)
    sregs_case("apic_base x2APIC without CPUID", apic_base=good.apic_base | 0x400)
    sregs_case("apic_base above MAXPHYADDR", apic_base=good.apic_base | 1 << 40)
    sregs_case("apic_base disabled", apic_base=0xFEE00100)
    sregs_case("apic_base moved", apic_base=0xFEC00900)
    _get(sys, rec, "KVM_GET_SREGS after the cases", v, X.KVM_GET_SREGS, X.kvm_sregs)

    for flags in (0x40, 0x80, 1 << 31, X.KVM_VCPUEVENT_VALID_PAYLOAD,
                  X.KVM_VCPUEVENT_VALID_TRIPLE_FAULT, X.KVM_VCPUEVENT_VALID_SIPI_VECTOR, 0):
        ev = X.kvm_vcpu_events(flags=flags)
        rec.call(f"KVM_SET_VCPU_EVENTS flags={flags:#x}", sys.ioctl, v, X.KVM_SET_VCPU_EVENTS, ev)
    for nr in (2, 31, 32, 255):
        ev = X.kvm_vcpu_events()
        ev.exception.injected, ev.exception.nr = 1, nr
        rec.call(f"KVM_SET_VCPU_EVENTS exception {nr} injected", sys.ioctl, v,
                 X.KVM_SET_VCPU_EVENTS, ev)
    ev = X.kvm_vcpu_events()
    ev.exception.pending, ev.exception.nr = 1, 255
    rec.call("KVM_SET_VCPU_EVENTS exception 255 pending without PAYLOAD", sys.ioctl, v,
             X.KVM_SET_VCPU_EVENTS, ev)
    _get(sys, rec, "KVM_GET_VCPU_EVENTS after the cases", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)

    for state in range(12):
        rec.call(f"KVM_SET_MP_STATE {state}", sys.ioctl, v, X.KVM_SET_MP_STATE,
                 X.kvm_mp_state(state))
    rec.call("KVM_SET_MP_STATE 0xffffffff", sys.ioctl, v, X.KVM_SET_MP_STATE,
             X.kvm_mp_state(0xFFFFFFFF))
    _get(sys, rec, "KVM_GET_MP_STATE after the cases", v, X.KVM_GET_MP_STATE, X.kvm_mp_state)

    for label, field, value in (("flags 1", "flags", 1), ("dr6 bit 32", "dr6", 1 << 32),
                                ("dr7 bit 32", "dr7", 1 << 32), ("reserved[0]=1", None, 1)):
        d = X.kvm_debugregs(dr6=0xFFFF0FF0, dr7=0x400)
        if field is None:
            d.reserved[0] = value
        else:
            setattr(d, field, value)
        rec.call(f"KVM_SET_DEBUGREGS {label}", sys.ioctl, v, X.KVM_SET_DEBUGREGS, d)

    for label, nr, flags, xcr, value in (
            ("nr 17", 17, 0, 0, 1), ("flags 1", 1, 1, 0, 1), ("XCR0 0", 1, 0, 0, 0),
            ("XCR0 FP|YMM", 1, 0, 0, 5), ("XCR0 FP|SSE without CPUID", 1, 0, 0, 3),
            ("XCR0 bit 62", 1, 0, 0, 1 << 62), ("XCR1 only", 1, 0, 1, 3), ("nr 0", 0, 0, 0, 0)):
        x = X.kvm_xcrs(nr_xcrs=nr, flags=flags)
        x.xcrs[0].xcr, x.xcrs[0].value = xcr, value
        rec.call(f"KVM_SET_XCRS {label}", sys.ioctl, v, X.KVM_SET_XCRS, x)

    xs = bytearray(4096)
    sys.ioctl(v, X.KVM_GET_XSAVE, xs)
    for label, off, val in (("XSTATE_BV bit 63", 519, 0x80), ("XCOMP_BV", 520, 1),
                            ("header reserved", 530, 1), ("SSE with MXCSR bit 31", None, None),
                            ("MXCSR bit 31 without SSE", 27, 0x80)):
        bad = bytearray(xs)
        if off is None:
            bad[512], bad[27] = 2, 0x80
        else:
            bad[off] = val
        rec.call(f"KVM_SET_XSAVE {label}", sys.ioctl, v, X.KVM_SET_XSAVE, bad)

    for khz in (2099000, 1, 0x7FFFFFFF):
        rec.call(f"KVM_SET_TSC_KHZ {khz}", sys.ioctl, v, X.KVM_SET_TSC_KHZ, khz)
        rec.call(f"KVM_GET_TSC_KHZ after {khz}", sys.ioctl, v, X.KVM_GET_TSC_KHZ, 0)

    for n in (0, 4, 16):
        mask = bytearray(4 + 16)
        mask[0:4] = n.to_bytes(4, "little")
        rec.call(f"KVM_SET_SIGNAL_MASK len {n}", sys.ioctl, v, X.KVM_SET_SIGNAL_MASK, mask)

    for name in ("GET_REGS", "SET_REGS", "GET_SREGS", "SET_SREGS", "GET_FPU", "SET_FPU",
                 "GET_MSRS", "SET_MSRS", "GET_CPUID2", "SET_CPUID2", "GET_MP_STATE",
                 "SET_MP_STATE", "GET_VCPU_EVENTS", "SET_VCPU_EVENTS", "GET_DEBUGREGS",
                 "SET_DEBUGREGS", "GET_XCRS", "SET_XCRS", "GET_XSAVE", "SET_XSAVE",
                 "SET_SIGNAL_MASK"):
        req = getattr(X, "KVM_" + name)
        rec.call(f"KVM_{name}(1) (unmapped address)", sys.ioctl, v, req, 1)
    rec.child("child: KVM_GET_REGS", lambda s: s.ioctl(v, X.KVM_GET_REGS, K.kvm_regs()))
    rec.child("child: KVM_GET_TSC_KHZ", lambda s: s.ioctl(v, X.KVM_GET_TSC_KHZ, 0))
    rec.call("KVM_GET_REGS on the VM fd", sys.ioctl, vm, X.KVM_GET_REGS, K.kvm_regs())
    rec.call("KVM_GET_REGS on /dev/kvm", sys.ioctl, kvm, X.KVM_GET_REGS, K.kvm_regs())


#: one write per kind of value, for every MSR of the index list
_MSR_VALUES = (0, 1, 0x1234, 0xFFFFFFFF, (1 << 32) + 5, 0x00007FFFFFFFFFFF,
               0xFFFF800000000000, 0x8000000000000000, 0x0007040600070406,
               0x400, 0xD01, 0xFEE00900)


@scenario("fact_x86_msrs",
          "KVM_GET_MSR_INDEX_LIST / FEATURE_INDEX_LIST and their E2BIG protocol; KVM_GET/SET_MSRS: "
          "the count processed, the stop at an unknown MSR, nmsrs >= 256 (E2BIG), and what each "
          "listed MSR does with a set of values")
def fact_x86_msrs(sys, rec):
    kvm = open_kvm(sys, rec)
    indices = msr_list(sys, rec, kvm, X.KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST")
    rec.record("index list", [hex(i) for i in indices])
    for n in (0, len(indices) - 1, len(indices)):
        buf = bytearray(4 + 4 * max(n, 1))
        buf[0:4] = n.to_bytes(4, "little")
        rec.call(f"KVM_GET_MSR_INDEX_LIST nmsrs={n} (the count {'-1' if n else '0'})"
                 if n < len(indices) else "KVM_GET_MSR_INDEX_LIST nmsrs=count",
                 sys.ioctl, kvm, X.KVM_GET_MSR_INDEX_LIST, buf)
        rec.record("nmsrs written back equals the count", int.from_bytes(buf[0:4], "little") == len(indices))
    feats = msr_list(sys, rec, kvm, X.KVM_GET_MSR_FEATURE_INDEX_LIST,
                     "KVM_GET_MSR_FEATURE_INDEX_LIST")
    rec.record("feature list", [hex(i) for i in feats])
    buf = bytearray(8)
    rec.call("KVM_GET_MSR_FEATURE_INDEX_LIST nmsrs=0", sys.ioctl, kvm,
             X.KVM_GET_MSR_FEATURE_INDEX_LIST, buf)
    rec.record("nmsrs written back", int.from_bytes(buf[0:4], "little"))
    rec.call("KVM_GET_MSR_INDEX_LIST(NULL)", sys.ioctl, kvm, X.KVM_GET_MSR_INDEX_LIST, 0)

    vm = create_vm(sys, rec, kvm)
    v = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if v is None:
        return
    get_msrs(sys, rec, "KVM_GET_MSRS 0 entries", v, [])
    get_msrs(sys, rec, "KVM_GET_MSRS 255 entries of SYSENTER_CS", v, [0x174] * 255)
    get_msrs(sys, rec, "KVM_GET_MSRS 256 entries", v, [0x174] * 256)
    set_msrs(sys, rec, "KVM_SET_MSRS 256 entries", v, [(0x174, 0)] * 256)
    for unknown in (0xDEADBEEF, 0x40000000, 0xC0011FFF):
        vals = get_msrs(sys, rec, f"KVM_GET_MSRS STAR, {unknown:#x}, LSTAR", v,
                        [0xC0000081, unknown, 0xC0000082])
        set_msrs(sys, rec, f"KVM_SET_MSRS STAR, {unknown:#x}, LSTAR", v,
                 [(0xC0000081, 1), (unknown, 0), (0xC0000082, 0)])
    set_msrs(sys, rec, "KVM_SET_MSRS STAR, LSTAR non-canonical, CSTAR", v,
             [(0xC0000081, 2), (0xC0000082, 1 << 63), (0xC0000083, 0)])
    vals = get_msrs(sys, rec, "KVM_GET_MSRS STAR, LSTAR", v, [0xC0000081, 0xC0000082])
    rec.record("STAR, LSTAR after the partial write", [hex(x) for x in vals])

    # MSRs the kernel emulates without listing them: EFER (set_efer), APIC_BASE
    for idx in [*indices, 0xC0000080, 0x1B]:
        if idx == MSR_TSC:
            continue
        outcomes = []
        for val in _MSR_VALUES:
            ok = sys.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(idx, val)]))
            buf = msrs_buf([(idx, 0)])
            got = sys.ioctl(v, X.KVM_GET_MSRS, buf)
            outcomes.append((ok, got, hex(msrs_values(buf, 1)[0])))
        rec.record(f"MSR {idx:#x}: (set, get, value) per value", outcomes)
    buf = msrs_buf([(MSR_TSC, 0)])
    sys.ioctl(v, X.KVM_GET_MSRS, buf)
    before = msrs_values(buf, 1)[0]
    rec.call("KVM_SET_MSRS TSC=1<<40", sys.ioctl, v, X.KVM_SET_MSRS, msrs_buf([(MSR_TSC, 1 << 40)]))
    sys.ioctl(v, X.KVM_GET_MSRS, buf)
    after = msrs_values(buf, 1)[0]
    rec.record("TSC reads back from 1<<40 on, below 1<<40 + 1s of cycles",
               (1 << 40) <= after < (1 << 40) + 10**10)
    rec.record("TSC was not 1<<40 before", before != 1 << 40)
    v2 = rec.call("KVM_CREATE_VCPU 1", sys.ioctl, vm, K.KVM_CREATE_VCPU, 1)
    set_msrs(sys, rec, "vCPU 0 KVM_SET_MSRS KVM_WALL_CLOCK_NEW=0x5000", v, [(0x4B564D00, 0x5000)])
    vals = get_msrs(sys, rec, "vCPU 1 KVM_GET_MSRS both wall-clock MSRs", v2, [0x11, 0x4B564D00])
    rec.record("vCPU 1 wall clocks (one per VM)", [hex(x) for x in vals])
    rec.child("child: KVM_GET_MSRS", lambda s: s.ioctl(v, X.KVM_GET_MSRS, msrs_buf([(0x174, 0)])))
    rec.call("KVM_GET_MSRS(1)", sys.ioctl, v, X.KVM_GET_MSRS, 1)


_KEEP = []  # the memslots' backing memory lives as long as the process (VMs may outlive the call)


def _reset_vector_slot(sys, rec, vm):
    """A memslot over the last 64 KiB below 4 GiB whose reset vector holds HLT."""
    mem = mmap.mmap(-1, 16 * P)
    mem[16 * P - 16] = 0xF4  # hlt at 0xfffffff0
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    region = K.kvm_userspace_memory_region(slot=0, guest_phys_addr=0xFFFF0000,
                                           memory_size=16 * P, userspace_addr=addr)
    rec.call("KVM_SET_USER_MEMORY_REGION 0xffff0000 + 64K (hlt at the reset vector)",
             sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, region)
    return mem


@scenario("fact_x86_cpuid2",
          "KVM_SET_CPUID2 / KVM_GET_CPUID2: nent > 256 is E2BIG, GET with a small nent is E2BIG "
          "and leaves nent as it was, a bad virtual-address width is EINVAL, an empty table; "
          "after KVM_RUN only the same table is accepted")
def fact_x86_cpuid2(sys, rec):
    kvm = open_kvm(sys, rec)
    sup, _ = supported_cpuid(sys, kvm)
    vm = create_vm(sys, rec, kvm)
    v = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if v is None:
        return
    rec.call("KVM_SET_CPUID2 nent=257", sys.ioctl, v, X.KVM_SET_CPUID2, cpuid_buf(257))
    rec.call("KVM_SET_CPUID2 nent=0", sys.ioctl, v, X.KVM_SET_CPUID2, cpuid_buf(0))
    rec.call("KVM_SET_CPUID2 the supported table", sys.ioctl, v, X.KVM_SET_CPUID2, bytearray(sup))
    buf = cpuid_buf(256)
    rec.call("KVM_GET_CPUID2 nent=256", sys.ioctl, v, X.KVM_GET_CPUID2, buf)
    count = int.from_bytes(buf[0:4], "little")
    stored = bytearray(buf[:8 + count * ENTRY])  # what the kernel keeps (its runtime bits)
    for label, nent in (("0", 0), ("count-1", count - 1), ("count", count)):
        buf = cpuid_buf(nent)
        rec.call(f"KVM_GET_CPUID2 nent={label}", sys.ioctl, v, X.KVM_GET_CPUID2, buf)
        rec.record(f"nent={label}: nent after is the one given", int.from_bytes(buf[0:4], "little") == nent)
    regs = K.kvm_regs()
    sys.ioctl(v, X.KVM_GET_REGS, regs)
    rec.record("RDX after KVM_SET_CPUID2 (set at reset only)", hex(regs.rdx))
    bad = bytearray(8 + ENTRY)
    bad[0:4] = (1).to_bytes(4, "little")
    e = K.kvm_cpuid_entry2(function=0x80000008, eax=0x2E24)  # 46 virtual bits
    bad[8:8 + ENTRY] = bytes(e)
    rec.call("KVM_SET_CPUID2 0x80000008 with 46 virtual bits", sys.ioctl, v, X.KVM_SET_CPUID2, bad)
    e.eax = 0x3024
    bad[8:8 + ENTRY] = bytes(e)
    rec.call("KVM_SET_CPUID2 0x80000008 with 48 virtual bits", sys.ioctl, v, X.KVM_SET_CPUID2, bad)
    rec.call("KVM_SET_CPUID2 the supported table again", sys.ioctl, v, X.KVM_SET_CPUID2,
             bytearray(sup))
    rec.call("KVM_SET_CPUID2(1)", sys.ioctl, v, X.KVM_SET_CPUID2, 1)

    # after KVM_RUN: kvm_set_cpuid -> kvm_cpuid_check_equal
    _KEEP.append(_reset_vector_slot(sys, rec, vm))
    m = rec.call("mmap vcpu", sys.mmap, v, P, 3, 1, 0)
    rec.call("KVM_RUN (hlt)", sys.ioctl, v, K.KVM_RUN, 0)
    if m is not None:
        rec.access("exit_reason", m, slice(8, 12))
    rec.call("after KVM_RUN: KVM_SET_CPUID2 the table KVM_GET_CPUID2 gave", sys.ioctl, v,
             X.KVM_SET_CPUID2, bytearray(stored))
    rec.call("after KVM_RUN: KVM_SET_CPUID2 nent=0", sys.ioctl, v, X.KVM_SET_CPUID2, cpuid_buf(0))
    changed = bytearray(stored)
    changed[8 + 12] ^= 1  # leaf 0 EAX
    rec.call("after KVM_RUN: KVM_SET_CPUID2 a changed table", sys.ioctl, v, X.KVM_SET_CPUID2,
             changed)
    rec.call("after KVM_RUN: KVM_SET_CPUID2 nent=257", sys.ioctl, v, X.KVM_SET_CPUID2,
             cpuid_buf(257))
    v1 = rec.call("KVM_CREATE_VCPU 1 (never run)", sys.ioctl, vm, K.KVM_CREATE_VCPU, 1)
    if v1 is not None:
        rec.call("vCPU 1: KVM_SET_CPUID2 a changed table", sys.ioctl, v1, X.KVM_SET_CPUID2,
                 changed)


@scenario("fact_x86_vcpu_event_caps",
          "KVM_SET_VCPU_EVENTS with VALID_PAYLOAD / VALID_TRIPLE_FAULT: EINVAL until "
          "KVM_CAP_EXCEPTION_PAYLOAD / KVM_CAP_X86_TRIPLE_FAULT_EVENT are enabled; then a "
          "pending exception with its payload and a pending triple fault read back")
def fact_x86_vcpu_event_caps(sys, rec):
    kvm, vm, v = vm_with_vcpu(sys, rec)
    if v is None:
        return

    def events(flags, pending=0, injected=0, payload=0, has_payload=0, triple=0, nr=14):
        ev = X.kvm_vcpu_events(flags=flags)
        ev.exception.pending, ev.exception.injected, ev.exception.nr = pending, injected, nr
        ev.exception_has_payload, ev.exception_payload = has_payload, payload
        ev.triple_fault.pending = triple
        return ev

    PAY, TRIPLE = X.KVM_VCPUEVENT_VALID_PAYLOAD, X.KVM_VCPUEVENT_VALID_TRIPLE_FAULT
    rec.call("SET_VCPU_EVENTS VALID_PAYLOAD without the cap", sys.ioctl, v,
             X.KVM_SET_VCPU_EVENTS, events(PAY, pending=1, has_payload=1, payload=0x1000))
    rec.call("SET_VCPU_EVENTS VALID_TRIPLE_FAULT without the cap", sys.ioctl, v,
             X.KVM_SET_VCPU_EVENTS, events(TRIPLE, triple=1))
    _get(sys, rec, "GET_VCPU_EVENTS without the caps", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)
    enable(sys, rec, vm, "ENABLE_CAP EXCEPTION_PAYLOAD", K.KVM_CAP_EXCEPTION_PAYLOAD, 1)
    enable(sys, rec, vm, "ENABLE_CAP X86_TRIPLE_FAULT_EVENT", K.KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1)
    rec.call("SET_VCPU_EVENTS a pending #PF with payload", sys.ioctl, v, X.KVM_SET_VCPU_EVENTS,
             events(PAY, pending=1, injected=1, has_payload=1, payload=0x1000))
    _get(sys, rec, "GET_VCPU_EVENTS: the pending #PF", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)
    rec.call("SET_VCPU_EVENTS pending vector 2 (NMI)", sys.ioctl, v, X.KVM_SET_VCPU_EVENTS,
             events(PAY, pending=1, nr=2))
    rec.call("SET_VCPU_EVENTS a pending triple fault", sys.ioctl, v, X.KVM_SET_VCPU_EVENTS,
             events(TRIPLE, triple=1))
    _get(sys, rec, "GET_VCPU_EVENTS: the triple fault", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)


def _pae_sregs2(s, pdptrs=None):
    """Flat protected mode with PAE paging (CR0.PG|PE, CR4.PAE, no EFER.LMA), CR3 0x3000;
    with ``pdptrs`` the four PDPTRs and KVM_SREGS2_FLAGS_PDPTRS_VALID."""
    _flat_pm_sregs(s)
    s.cr0, s.cr4, s.cr3, s.flags = 0x80000011, X.X86_CR4_PAE, 0x3000, 0
    if pdptrs is not None:
        s.flags = X.KVM_SREGS2_FLAGS_PDPTRS_VALID
        for i, p in enumerate(pdptrs):
            s.pdptrs[i] = p
    return s


@scenario("fact_x86_sregs2",
          "KVM_GET/SET_SREGS2: the cap, a new vCPU, unknown flags, PDPTRs without PAE paging, "
          "the PDPTRs round trip, the SREGS checks, no memslot at CR3, the queued interrupt")
def fact_x86_sregs2(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("CHECK_EXTENSION SREGS2", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION, X.KVM_CAP_SREGS2)
    vm = create_vm(sys, rec, kvm)
    v = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if v is None:
        return
    s = _get(sys, rec, "KVM_GET_SREGS2 new vCPU", v, X.KVM_GET_SREGS2, X.kvm_sregs2)
    for flags in (2, 3, 1 << 63):
        bad = _pae_sregs2(X.kvm_sregs2.from_buffer_copy(s))
        bad.flags = flags
        rec.call(f"KVM_SET_SREGS2 flags {flags:#x}", sys.ioctl, v, X.KVM_SET_SREGS2, bad)
    for label, cr0, cr4, efer in (("no paging", 0x11, X.X86_CR4_PAE, 0),
                                  ("no CR4.PAE", 0x80000011, 0, 0),
                                  ("long mode", 0x80000011, X.X86_CR4_PAE,
                                   X.EFER_LME | X.EFER_LMA)):
        bad = _pae_sregs2(X.kvm_sregs2.from_buffer_copy(s), [1, 2, 3, 4])
        bad.cr0, bad.cr4, bad.efer = cr0, cr4, efer
        if efer:
            bad.cs.l, bad.cs.db = 1, 0
        rec.call(f"KVM_SET_SREGS2 PDPTRS_VALID, {label}", sys.ioctl, v, X.KVM_SET_SREGS2, bad)
    bad = X.kvm_sregs2.from_buffer_copy(s)
    bad.cr0 = 0x80000010
    rec.call("KVM_SET_SREGS2 cr0 PG without PE", sys.ioctl, v, X.KVM_SET_SREGS2, bad)
    _get(sys, rec, "KVM_GET_SREGS2 after the refusals", v, X.KVM_GET_SREGS2, X.kvm_sregs2)

    pae = _pae_sregs2(X.kvm_sregs2.from_buffer_copy(s),
                      [0x1001, 0x2001, 0x3001, 0xFFFF000000000001])
    pae.cr2, pae.cr8 = 0xBEEF000, 0x10  # CR8 reserved bits: kvm_set_cr8 fails, ignored
    rec.call("KVM_SET_SREGS2 PAE paging with PDPTRs", sys.ioctl, v, X.KVM_SET_SREGS2, pae)
    _get(sys, rec, "KVM_GET_SREGS2 after PAE", v, X.KVM_GET_SREGS2, X.kvm_sregs2)
    _get(sys, rec, "KVM_GET_SREGS after PAE", v, X.KVM_GET_SREGS, X.kvm_sregs)
    pae = _pae_sregs2(X.kvm_sregs2.from_buffer_copy(s))
    pae.cr3 = 0x5020
    rec.call("KVM_SET_SREGS2 PAE paging without PDPTRs, no memslot", sys.ioctl, v,
             X.KVM_SET_SREGS2, pae)
    _get(sys, rec, "KVM_GET_SREGS2 after PAE without PDPTRs", v, X.KVM_GET_SREGS2,
         X.kvm_sregs2)
    _flat_pm_sregs(pae)
    pae.flags = 0
    rec.call("KVM_SET_SREGS2 protected mode, no paging", sys.ioctl, v, X.KVM_SET_SREGS2, pae)
    _get(sys, rec, "KVM_GET_SREGS2 without paging", v, X.KVM_GET_SREGS2, X.kvm_sregs2)

    sregs = _get(sys, rec, "KVM_GET_SREGS", v, X.KVM_GET_SREGS, X.kvm_sregs)
    sregs.interrupt_bitmap[1] = 1 << 3
    rec.call("KVM_SET_SREGS with interrupt 67", sys.ioctl, v, X.KVM_SET_SREGS, sregs)
    rec.call("KVM_SET_SREGS2 after it", sys.ioctl, v, X.KVM_SET_SREGS2, pae)
    got = _get(sys, rec, "KVM_GET_SREGS after SET_SREGS2", v, X.KVM_GET_SREGS, X.kvm_sregs)
    rec.record("interrupt_bitmap after SET_SREGS2", list(got.interrupt_bitmap))
    rec.call("KVM_GET_SREGS2(8) (unmapped address)", sys.ioctl, v, X.KVM_GET_SREGS2, 8)
    rec.call("KVM_SET_SREGS2(8) (unmapped address)", sys.ioctl, v, X.KVM_SET_SREGS2, 8)


def _lapic_regs(buf):
    """The nonzero 32-bit registers of a LAPIC page, by offset (readable in a diff)."""
    return tuple((hex(i), hex(int.from_bytes(buf[i:i + 4], "little")))
                 for i in range(0, 1024, 16) if any(buf[i:i + 8]))


def _get_lapic(sys, rec, label, v):
    s = X.kvm_lapic_state()
    if rec.call(label, sys.ioctl, v, X.KVM_GET_LAPIC, s) is not None:
        rec.record(f"{label}: registers", _lapic_regs(bytes(s)))
    return bytearray(bytes(s))


def _put(buf, reg, value):
    buf[reg:reg + 4] = value.to_bytes(4, "little")


def _x2apic(sys, rec, v, label):
    """SET_CPUID2 with x2APIC (leaf 1 ECX bit 21), then APIC_BASE enabled in x2APIC mode."""
    e = K.kvm_cpuid_entry2(function=1, ecx=1 << 21)
    rec.call(f"{label}: KVM_SET_CPUID2 with x2APIC", sys.ioctl, v, X.KVM_SET_CPUID2,
             cpuid_buf(1, bytes(e)))
    rec.call(f"{label}: APIC_BASE x2APIC", sys.ioctl, v, X.KVM_SET_MSRS,
             msrs_buf([(0x1B, 0xFEE00C00)]))


@scenario("fact_x86_lapic",
          "KVM_GET/SET_LAPIC: EINVAL without an in-kernel irqchip; the page of a new vCPU "
          "(full and split irqchip, BSP and AP); a round trip (LVR and PPR recomputed); "
          "x2APIC mode with and without KVM_X2APIC_API_USE_32BIT_IDS")
def fact_x86_lapic(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    v = rec.call("VM 1 (no irqchip): KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if v is None:
        return
    _get_lapic(sys, rec, "VM 1: KVM_GET_LAPIC", v)
    rec.call("VM 1: KVM_SET_LAPIC", sys.ioctl, v, X.KVM_SET_LAPIC, X.kvm_lapic_state())
    rec.call("VM 1: KVM_SET_LAPIC(8) (unmapped address)", sys.ioctl, v, X.KVM_SET_LAPIC, 8)

    vm = create_vm(sys, rec, kvm)
    rec.call("VM 2: KVM_CREATE_IRQCHIP", sys.ioctl, vm, K.KVM_CREATE_IRQCHIP, 0)
    v0 = rec.call("VM 2: KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    v1 = rec.call("VM 2: KVM_CREATE_VCPU 1", sys.ioctl, vm, K.KVM_CREATE_VCPU, 1)
    if v0 is None or v1 is None:
        return
    _get_lapic(sys, rec, "VM 2: vCPU 0 KVM_GET_LAPIC", v0)
    page = _get_lapic(sys, rec, "VM 2: vCPU 1 KVM_GET_LAPIC", v1)
    _put(page, 0x20, 0x07000000)    # xAPIC ID 7
    _put(page, 0x30, 0x12345678)    # LVR: recomputed
    _put(page, 0x80, 0x20)          # TPR
    _put(page, 0x120, 1 << 17)      # ISR: vector 0x51 in service
    _put(page, 0xA0, 0x99)          # PPR: recomputed
    _put(page, 0xD0, 0x01000000)    # LDR
    _put(page, 0xF0, 0x1FF)         # SVR: software enabled
    _put(page, 0x300, 0x4031)       # ICR
    _put(page, 0x310, 0x03000000)   # ICR2
    _put(page, 0x350, 0x8700)       # LVT0
    _put(page, 0x3E0, 0xB)          # TDCR
    rec.call("VM 2: vCPU 1 KVM_SET_LAPIC", sys.ioctl, v1, X.KVM_SET_LAPIC,
             X.kvm_lapic_state.from_buffer_copy(page))
    _get_lapic(sys, rec, "VM 2: vCPU 1 after SET_LAPIC", v1)
    rec.call("VM 2: vCPU 1 KVM_SET_LAPIC again", sys.ioctl, v1, X.KVM_SET_LAPIC,
             X.kvm_lapic_state.from_buffer_copy(page))
    _get_lapic(sys, rec, "VM 2: vCPU 1 after the second SET_LAPIC", v1)
    rec.call("VM 2: KVM_GET_LAPIC(8) (unmapped address)", sys.ioctl, v1, X.KVM_GET_LAPIC, 8)
    rec.call("VM 2: KVM_SET_LAPIC(8) (unmapped address)", sys.ioctl, v1, X.KVM_SET_LAPIC, 8)
    _x2apic(sys, rec, v0, "VM 2 vCPU 0")
    _get_lapic(sys, rec, "VM 2: vCPU 0 x2APIC KVM_GET_LAPIC", v0)

    vm = create_vm(sys, rec, kvm)
    enable(sys, rec, vm, "VM 3: ENABLE_CAP SPLIT_IRQCHIP 24", 121, 24)
    v0 = rec.call("VM 3: KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    v5 = rec.call("VM 3: KVM_CREATE_VCPU 5", sys.ioctl, vm, K.KVM_CREATE_VCPU, 5)
    if v0 is None or v5 is None:
        return
    _get_lapic(sys, rec, "VM 3: vCPU 0 KVM_GET_LAPIC", v0)
    _get_lapic(sys, rec, "VM 3: vCPU 5 KVM_GET_LAPIC", v5)
    _x2apic(sys, rec, v5, "VM 3 vCPU 5")
    page = _get_lapic(sys, rec, "VM 3: vCPU 5 x2APIC KVM_GET_LAPIC", v5)
    _put(page, 0x20, 0x9)           # another ID: ignored without USE_32BIT_IDS
    _put(page, 0xD0, 0x5)           # LDR: recomputed in x2APIC mode
    _put(page, 0x300, 0x40FE)       # ICR
    _put(page, 0x310, 0x7)          # ICR2: the destination, high half of the 64-bit ICR
    rec.call("VM 3: vCPU 5 x2APIC KVM_SET_LAPIC id 9", sys.ioctl, v5, X.KVM_SET_LAPIC,
             X.kvm_lapic_state.from_buffer_copy(page))
    _get_lapic(sys, rec, "VM 3: vCPU 5 after SET_LAPIC id 9", v5)

    vm = create_vm(sys, rec, kvm)
    enable(sys, rec, vm, "VM 4: ENABLE_CAP SPLIT_IRQCHIP 24", 121, 24)
    enable(sys, rec, vm, "VM 4: ENABLE_CAP X2APIC_API USE_32BIT_IDS", 129, 1)
    v2 = rec.call("VM 4: KVM_CREATE_VCPU 2", sys.ioctl, vm, K.KVM_CREATE_VCPU, 2)
    if v2 is None:
        return
    _x2apic(sys, rec, v2, "VM 4 vCPU 2")
    page = _get_lapic(sys, rec, "VM 4: vCPU 2 x2APIC KVM_GET_LAPIC", v2)
    good = bytes(page)
    _put(page, 0x20, 0x3)
    _put(page, 0xF0, 0x1FF)
    rec.call("VM 4: vCPU 2 KVM_SET_LAPIC id 3 (32-bit ids)", sys.ioctl, v2, X.KVM_SET_LAPIC,
             X.kvm_lapic_state.from_buffer_copy(page))
    _get_lapic(sys, rec, "VM 4: vCPU 2 after the refused SET_LAPIC", v2)
    rec.call("VM 4: vCPU 2 KVM_SET_LAPIC id 2 (32-bit ids)", sys.ioctl, v2, X.KVM_SET_LAPIC,
             X.kvm_lapic_state.from_buffer_copy(good))
    _get_lapic(sys, rec, "VM 4: vCPU 2 after SET_LAPIC", v2)


@scenario("fact_x86_guest_debug_nmi",
          "KVM_SET_GUEST_DEBUG (no flag check on x86, INJECT_DB/BP queue an exception, "
          "EBUSY while one is pending, nothing visible in REGS/DEBUGREGS) and KVM_NMI on a "
          "VM without and with an in-kernel irqchip (nmi.pending at most 2, 1 when masked)")
def fact_x86_guest_debug_nmi(sys, rec):
    kvm = open_kvm(sys, rec)
    for cap in (22, 23, 195):  # USER_NMI, SET_GUEST_DEBUG, SET_GUEST_DEBUG2
        rec.call(f"CHECK_EXTENSION {cap}", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION, cap)
    vm = create_vm(sys, rec, kvm)
    v = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if v is None:
        return
    for ctl in (0, 1, 3, 1 << 4, 1 << 21, 1 << 31, 0x10001):
        rec.call(f"SET_GUEST_DEBUG control {ctl:#x}", sys.ioctl, v, X.KVM_SET_GUEST_DEBUG,
                 X.kvm_guest_debug(control=ctl))
    dbg = X.kvm_guest_debug(control=X.KVM_GUESTDBG_ENABLE | X.KVM_GUESTDBG_USE_HW_BP
                            | X.KVM_GUESTDBG_SINGLESTEP)
    dbg.debugreg[0], dbg.debugreg[7] = 0x1000, 0x3
    rec.call("SET_GUEST_DEBUG HW_BP|SINGLESTEP", sys.ioctl, v, X.KVM_SET_GUEST_DEBUG, dbg)
    _get(sys, rec, "KVM_GET_REGS after it", v, X.KVM_GET_REGS, K.kvm_regs)
    _get(sys, rec, "KVM_GET_DEBUGREGS after it", v, X.KVM_GET_DEBUGREGS, X.kvm_debugregs)
    rec.call("SET_GUEST_DEBUG INJECT_BP without ENABLE", sys.ioctl, v, X.KVM_SET_GUEST_DEBUG,
             X.kvm_guest_debug(control=X.KVM_GUESTDBG_INJECT_BP))
    _get(sys, rec, "KVM_GET_VCPU_EVENTS after INJECT_BP", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)
    rec.call("SET_GUEST_DEBUG INJECT_DB while #BP is pending", sys.ioctl, v,
             X.KVM_SET_GUEST_DEBUG, X.kvm_guest_debug(control=X.KVM_GUESTDBG_INJECT_DB | 1))
    ev = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_NMI_PENDING)
    rec.call("KVM_SET_VCPU_EVENTS no exception", sys.ioctl, v, X.KVM_SET_VCPU_EVENTS, ev)
    rec.call("SET_GUEST_DEBUG INJECT_DB|INJECT_BP", sys.ioctl, v, X.KVM_SET_GUEST_DEBUG,
             X.kvm_guest_debug(control=X.KVM_GUESTDBG_INJECT_DB | X.KVM_GUESTDBG_INJECT_BP | 1))
    _get(sys, rec, "KVM_GET_VCPU_EVENTS after INJECT_DB|BP", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)
    rec.call("SET_GUEST_DEBUG(8) (unmapped address)", sys.ioctl, v, X.KVM_SET_GUEST_DEBUG, 8)

    v1 = rec.call("KVM_CREATE_VCPU 1", sys.ioctl, vm, K.KVM_CREATE_VCPU, 1)
    if v1 is None:
        return
    for i in range(3):
        rec.call(f"KVM_NMI {i + 1}", sys.ioctl, v1, X.KVM_NMI, 0)
        _get(sys, rec, f"KVM_GET_VCPU_EVENTS after NMI {i + 1}", v1, X.KVM_GET_VCPU_EVENTS,
             X.kvm_vcpu_events)
    ev = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_NMI_PENDING)
    ev.nmi.masked = 1
    rec.call("KVM_SET_VCPU_EVENTS no NMI pending, masked", sys.ioctl, v1,
             X.KVM_SET_VCPU_EVENTS, ev)
    for i in range(2):
        rec.call(f"KVM_NMI masked {i + 1}", sys.ioctl, v1, X.KVM_NMI, 0)
    _get(sys, rec, "KVM_GET_VCPU_EVENTS after masked NMIs", v1, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)
    vm = create_vm(sys, rec, kvm)
    rec.call("VM 2: KVM_CREATE_IRQCHIP", sys.ioctl, vm, K.KVM_CREATE_IRQCHIP, 0)
    v = rec.call("VM 2: KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if v is None:
        return
    rec.call("VM 2: KVM_NMI", sys.ioctl, v, X.KVM_NMI, 0)
    _get(sys, rec, "VM 2: KVM_GET_VCPU_EVENTS after NMI", v, X.KVM_GET_VCPU_EVENTS,
         X.kvm_vcpu_events)


@scenario("fact_x86_dev_get_msrs",
          "KVM_GET_MSRS on /dev/kvm: the feature MSRs' values, an advertised non-feature MSR "
          "(0), the first other MSR stops the loop, E2BIG at 256 entries, EFAULT; "
          "KVM_SET_MSRS on /dev/kvm")
def fact_x86_dev_get_msrs(sys, rec):
    kvm = open_kvm(sys, rec)
    feats = msr_list(sys, rec, kvm, X.KVM_GET_MSR_FEATURE_INDEX_LIST,
                     "KVM_GET_MSR_FEATURE_INDEX_LIST")
    buf = msrs_buf([(i, 0) for i in feats])
    n = rec.call("KVM_GET_MSRS of the feature MSRs", sys.ioctl, kvm, X.KVM_GET_MSRS, buf)
    if n is not None:
        rec.record("their values", [(hex(i), hex(d)) for i, d in
                                    zip(feats, msrs_values(buf, len(feats)))])
    for idx in (0x10, 0x1B, 0x480, 0xFFFFFFFF):
        buf = msrs_buf([(0x10A, 0), (idx, 5), (0x345, 7)])
        rec.call(f"KVM_GET_MSRS ARCH_CAP, {idx:#x}, PERF_CAP", sys.ioctl, kvm, X.KVM_GET_MSRS,
                 buf)
        rec.record(f"values with {idx:#x}", [hex(d) for d in msrs_values(buf, 3)])
    rec.call("KVM_GET_MSRS nmsrs=0", sys.ioctl, kvm, X.KVM_GET_MSRS, msrs_buf([]))
    for n in (255, 256):
        buf = bytearray(8 + 16 * n)
        buf[0:4] = n.to_bytes(4, "little")
        for i in range(n):
            buf[8 + 16 * i:12 + 16 * i] = (0x10A).to_bytes(4, "little")
        rec.call(f"KVM_GET_MSRS nmsrs={n}", sys.ioctl, kvm, X.KVM_GET_MSRS, buf)
    rec.call("KVM_GET_MSRS(8) (unmapped address)", sys.ioctl, kvm, X.KVM_GET_MSRS, 8)
    vm = create_vm(sys, rec, kvm)
    v = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if v is not None:
        buf = msrs_buf([(0x174, 3), (0x1234, 5), (0x175, 7)])
        rec.call("vCPU KVM_GET_MSRS SYSENTER_CS, 0x1234, SYSENTER_ESP", sys.ioctl, v,
                 X.KVM_GET_MSRS, buf)
        rec.record("vCPU values (the refused entry zeroed)", msrs_values(buf, 3))
    rec.call("KVM_SET_MSRS on /dev/kvm", sys.ioctl, kvm, X.KVM_SET_MSRS,
             msrs_buf([(0x10A, 0)]))
