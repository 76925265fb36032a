"""Conformance scenarios of x86 machine check, the guest MTRRs and the /dev/kvm attributes.

Registered into kmock.testing.conformance.SCENARIOS when that module is imported:
KVM_X86_GET_MCE_CAP_SUPPORTED, KVM_X86_SETUP_MCE, KVM_X86_SET_MCE and the MCE MSRs
(kmock.kvm.x86_mce), the MTRR MSRs (kmock.kvm.x86_mtrr), KVM_GET/HAS_DEVICE_ATTR on
/dev/kvm (kmock.kvm.device). Sources: arch/x86/kvm/x86.c kvm_arch_dev_ioctl,
kvm_vcpu_ioctl_x86_setup_mce, kvm_vcpu_ioctl_x86_set_mce, set_msr_mce, get_msr_mce,
kvm_x86_dev_get_attr; arch/x86/kvm/mtrr.c (docs/vcpu-state.md).
"""

import ctypes

from ..uapi import kvm as K
from ..uapi import x86 as X
from . import conformance_vcpu as cv  # a module object: conformance_vcpu may import us
from .conformance import create_vm, open_kvm, scenario
from .conformance_x86_vm import enable

U64 = (1 << 64) - 1
MCG_CAP, MCG_STATUS, MCG_CTL, MCG_EXT_CTL = 0x179, 0x17A, 0x17B, 0x4D0
MC0_CTL, MC0_CTL2 = 0x400, 0x280
#: QEMU 7.2's default mcg_cap: MCG_CTL_P | MCG_SER_P, 10 banks
QEMU_MCG_CAP = 0x100 | 0x1000000 | 10
MTRRCAP, DEFTYPE = 0xFE, 0x2FF
FIXED = (0x250, 0x258, 0x259, *range(0x268, 0x270))
VAR = tuple(range(0x200, 0x210))


def _u64(v=0):
    return ctypes.c_uint64(v)


def _vcpu(sys, rec, kvm, label="KVM_CREATE_VCPU 0"):
    vm = create_vm(sys, rec, kvm)
    return vm, rec.call(label, sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)


def _setup(sys, rec, v, cap, label=None):
    return rec.call(label or f"SETUP_MCE {cap:#x}", sys.ioctl, v, X.KVM_X86_SETUP_MCE, _u64(cap))


def _one_by_one(sys, v, entries):
    """(SET_MSRS result, GET_MSRS result, value read) of each (index, value) alone."""
    out = []
    for idx, val in entries:
        ok = sys.ioctl(v, X.KVM_SET_MSRS, cv.msrs_buf([(idx, val)]))
        buf = cv.msrs_buf([(idx, 0)])
        got = sys.ioctl(v, X.KVM_GET_MSRS, buf)
        out.append((hex(idx), hex(val), ok, got, hex(cv.msrs_values(buf, 1)[0])))
    return out


def _bank_msrs(n):
    return [MC0_CTL + i for i in range(4 * n)]


@scenario("x86_mce_setup",
          "KVM_X86_GET_MCE_CAP_SUPPORTED (/dev/kvm only, EFAULT); a new vCPU's MCE MSRs "
          "(32 banks, no capability bit); KVM_X86_SETUP_MCE: 0 or > 32 banks, a bit outside "
          "supported | 0xff | 0xff0000 -> EINVAL with nothing changed; what it sets")
def x86_mce_setup(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("CHECK_EXTENSION(MCE)", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION, X.KVM_CAP_MCE)
    cap = _u64()
    rec.call("GET_MCE_CAP_SUPPORTED", sys.ioctl, kvm, X.KVM_X86_GET_MCE_CAP_SUPPORTED, cap)
    supported = rec.record("supported mce cap", cap.value)
    rec.call("GET_MCE_CAP_SUPPORTED(8)", sys.ioctl, kvm, X.KVM_X86_GET_MCE_CAP_SUPPORTED, 8)
    vm, v = _vcpu(sys, rec, kvm)
    rec.call("GET_MCE_CAP_SUPPORTED on the VM", sys.ioctl, vm,
             X.KVM_X86_GET_MCE_CAP_SUPPORTED, _u64())
    rec.call("GET_MCE_CAP_SUPPORTED on the vCPU", sys.ioctl, v,
             X.KVM_X86_GET_MCE_CAP_SUPPORTED, _u64())
    rec.call("SETUP_MCE on /dev/kvm", sys.ioctl, kvm, X.KVM_X86_SETUP_MCE, _u64(1))
    rec.call("SETUP_MCE on the VM", sys.ioctl, vm, X.KVM_X86_SETUP_MCE, _u64(1))
    idx = [0, 1, MCG_CAP, MCG_STATUS, MCG_CTL, MCG_EXT_CTL]
    vals = cv.get_msrs(sys, rec, "GET_MSRS P5_MC_ADDR/TYPE, MCG_CAP/STATUS/CTL/EXT_CTL", v, idx)
    rec.record("values", [hex(x) for x in vals])
    vals = cv.get_msrs(sys, rec, "GET_MSRS MC0_CTL .. MC31_MISC, MC32_CTL", v,
                    _bank_msrs(32) + [MC0_CTL + 128])
    rec.record("bank values", sorted(set(vals)))
    vals = cv.get_msrs(sys, rec, "GET_MSRS MC0_CTL2 .. MC31_CTL2, MC32_CTL2", v,
                    [MC0_CTL2 + i for i in range(33)])
    rec.record("CTL2 values", sorted(set(vals)))
    cv.set_msrs(sys, rec, "SET_MSRS MC3_STATUS=0x77, MC3_ADDR=0x88", v,
             [(MC0_CTL + 13, 0x77), (MC0_CTL + 14, 0x88)])
    for bad in (0, 33, 0xFF, 0x100):
        _setup(sys, rec, v, bad)
    rec.call("SETUP_MCE(8)", sys.ioctl, v, X.KVM_X86_SETUP_MCE, 8)
    outcomes = []
    for bit in range(8, 64):
        if 16 <= bit < 24:
            continue
        try:
            r = ("ok", sys.ioctl(v, X.KVM_X86_SETUP_MCE, _u64(1 << bit | 4)))
        except OSError as e:
            r = ("errno", e.errno)
        outcomes.append((bit, r, bool(supported >> bit & 1)))
    rec.record("SETUP_MCE 4 banks | each bit 8..63 (not 16..23): outcome, supported", outcomes)
    vals = cv.get_msrs(sys, rec, "GET_MSRS MCG_CAP, MCG_CTL, MC0_CTL after the failures", v,
                    [MCG_CAP, MCG_CTL, MC0_CTL])
    rec.record("values", [hex(x) for x in vals])
    _setup(sys, rec, v, 0xFF0000 | 32, "SETUP_MCE 32 banks | 0xff0000")
    vals = cv.get_msrs(sys, rec, "GET_MSRS MCG_CAP, MCG_CTL", v, [MCG_CAP, MCG_CTL])
    rec.record("values", [hex(x) for x in vals])
    _setup(sys, rec, v, QEMU_MCG_CAP, "SETUP_MCE QEMU's CTL_P|SER_P|10")
    vals = cv.get_msrs(sys, rec, "GET_MSRS MCG_CAP, MCG_CTL, MCG_STATUS", v,
                    [MCG_CAP, MCG_CTL, MCG_STATUS])
    rec.record("values", [hex(x) for x in vals])
    vals = cv.get_msrs(sys, rec, "GET_MSRS MC0_CTL .. MC9_MISC, MC10_CTL", v,
                    _bank_msrs(10) + [MC0_CTL + 40])
    rec.record("bank values", [hex(x) for x in vals])
    vals = cv.get_msrs(sys, rec, "GET_MSRS MC0_CTL2 .. MC9_CTL2, MC10_CTL2", v,
                    [MC0_CTL2 + i for i in range(11)])
    rec.record("CTL2 values", [hex(x) for x in vals])
    _setup(sys, rec, v, 0x100 | 2, "SETUP_MCE CTL_P|2 (fewer banks)")
    vals = cv.get_msrs(sys, rec, "GET_MSRS MC0_CTL .. MC1_MISC, MC2_CTL", v,
                    _bank_msrs(2) + [MC0_CTL + 8])
    rec.record("bank values", [hex(x) for x in vals])
    _setup(sys, rec, v, 4, "SETUP_MCE 4 banks, no CTL_P")
    vals = cv.get_msrs(sys, rec, "GET_MSRS MCG_CTL (stays), MC3_STATUS/ADDR (kept)", v,
                    [MCG_CTL, MC0_CTL + 13, MC0_CTL + 14])
    rec.record("values", [hex(x) for x in vals])
    if supported & 0x400:  # MCG_CMCI_P: MCi_CTL2 becomes 0 on SETUP_MCE
        _setup(sys, rec, v, 0x400 | 4, "SETUP_MCE CMCI_P|4")
        cv.set_msrs(sys, rec, "SET_MSRS MC0_CTL2 = CMCI_EN|5", v, [(MC0_CTL2, 1 << 30 | 5)])
        _setup(sys, rec, v, 0x400 | 4, "SETUP_MCE CMCI_P|4 again")
        cv.get_msrs(sys, rec, "GET_MSRS MC0_CTL2", v, [MC0_CTL2])


@scenario("x86_mce_msrs",
          "host-initiated KVM_SET/GET_MSRS of the MCE MSRs before and after SETUP_MCE: "
          "MCG_CTL (MCG_CTL_P, 0 or ~0), MCi_CTL (0 or ~0, bits 10 and 0 may clear), "
          "STATUS/ADDR/MISC any value, MCi_CTL2 (CMCI_P, reserved bits), banks beyond the "
          "count, MCG_CAP / P5 / MCG_EXT_CTL writes; QEMU 7.2's MCE block in one call")
def x86_mce_msrs(sys, rec):
    kvm = open_kvm(sys, rec)
    _vm, v = _vcpu(sys, rec, kvm)
    values = (0, 1, 2, 0x400, U64, U64 & ~1, U64 & ~0x400, U64 & ~0x401, U64 & ~2,
              1 << 30, 1 << 30 | 0x7FFF, 1 << 31, 1 << 63)
    regs = (0, 1, MCG_CAP, MCG_STATUS, MCG_CTL, MCG_EXT_CTL, MC0_CTL, MC0_CTL + 1,
            MC0_CTL + 2, MC0_CTL + 3, MC0_CTL + 127, MC0_CTL + 128, MC0_CTL2,
            MC0_CTL2 + 31, MC0_CTL2 + 32)
    rec.record("new vCPU: (index, value, set, get, read) per value",
               _one_by_one(sys, v, [(i, x) for i in regs for x in values]))
    _setup(sys, rec, v, QEMU_MCG_CAP)
    rec.record("after SETUP_MCE CTL_P|SER_P|10: (index, value, set, get, read) per value",
               _one_by_one(sys, v, [(i, x) for i in regs + (MC0_CTL + 39, MC0_CTL + 40,
                                                             MC0_CTL2 + 9, MC0_CTL2 + 10)
                                    for x in values]))
    # a refused entry stops the loop: those before it are written, those after are not
    n = cv.set_msrs(sys, rec, "SET_MSRS MC0_STATUS=7, MC0_CTL=1 (refused), MC0_ADDR=9", v,
                 [(MC0_CTL + 1, 7), (MC0_CTL, 1), (MC0_CTL + 2, 9)])
    rec.record("processed", n)
    vals = cv.get_msrs(sys, rec, "GET_MSRS MC0_CTL, STATUS, ADDR", v, [MC0_CTL, MC0_CTL + 1,
                                                                     MC0_CTL + 2])
    rec.record("values", [hex(x) for x in vals])
    qemu = [(MCG_STATUS, 0), (MCG_CTL, U64)]
    for b in range(10):
        qemu += [(MC0_CTL + 4 * b, U64), (MC0_CTL + 4 * b + 1, 0), (MC0_CTL + 4 * b + 2, 0),
                 (MC0_CTL + 4 * b + 3, 0)]
    cv.set_msrs(sys, rec, "SET_MSRS QEMU 7.2's MCE block (42 entries)", v, qemu)
    vals = cv.get_msrs(sys, rec, "GET_MSRS them back", v, [i for i, _ in qemu])
    rec.record("values", [hex(x) for x in vals])
    _, v2 = _vcpu(sys, rec, kvm, "VM 2: KVM_CREATE_VCPU 0")
    _setup(sys, rec, v2, 0x1000000 | 3, "VM 2: SETUP_MCE SER_P|3 (no CTL_P)")
    rec.record("VM 2: MCG_CTL without CTL_P: (index, value, set, get, read)",
               _one_by_one(sys, v2, [(MCG_CTL, x) for x in (0, U64, 1)]))


@scenario("x86_mce_set_mce",
          "KVM_X86_SET_MCE: bank >= count or no MCI_STATUS_VAL -> EINVAL (EFAULT first); "
          "corrected errors (OVER), UCNA, uncorrected errors dropped by MCG_CTL / MCi_CTL, "
          "a triple fault without CR4.MCE or with MCIP, #MC queued otherwise")
def x86_mce_set_mce(sys, rec):
    kvm = open_kvm(sys, rec)
    vm, v = _vcpu(sys, rec, kvm)
    enable(sys, rec, vm, "ENABLE_CAP X86_TRIPLE_FAULT_EVENT", K.KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1)
    VAL, _OVER, UC, S, AR, PCC = 1 << 63, 1 << 62, 1 << 61, 1 << 56, 1 << 55, 1 << 57

    def set_mce(label, bank, status, addr=0x1000, misc=0x86, mcg_status=0, fd=None):
        m = X.kvm_x86_mce(status=status, addr=addr, misc=misc, mcg_status=mcg_status, bank=bank)
        return rec.call(label, sys.ioctl, v if fd is None else fd, X.KVM_X86_SET_MCE, m)

    def bank(label, b):
        vals = cv.get_msrs(sys, rec, f"GET_MSRS MCG_STATUS, MC{b}_CTL..MISC ({label})", v,
                           [MCG_STATUS] + [MC0_CTL + 4 * b + i for i in range(4)])
        rec.record(f"MCG_STATUS, MC{b}_CTL..MISC ({label})", [hex(x) for x in vals])

    def events(label):
        ev = X.kvm_vcpu_events()
        rec.call(f"GET_VCPU_EVENTS ({label})", sys.ioctl, v, X.KVM_GET_VCPU_EVENTS, ev)
        rec.record(f"exception injected, pending, nr; triple fault pending ({label})",
                   (ev.exception.injected, ev.exception.pending, ev.exception.nr,
                    ev.triple_fault.pending))

    set_mce("SET_MCE bank 0 corrected, before SETUP_MCE (32 banks)", 0, VAL | 0x5)
    set_mce("SET_MCE bank 32", 32, VAL)
    set_mce("SET_MCE bank 0 without VAL", 0, 0x5)
    rec.call("SET_MCE(8)", sys.ioctl, v, X.KVM_X86_SET_MCE, 8)
    rec.call("SET_MCE on /dev/kvm", sys.ioctl, kvm, X.KVM_X86_SET_MCE, X.kvm_x86_mce())
    _setup(sys, rec, v, QEMU_MCG_CAP)
    set_mce("SET_MCE bank 10 (10 banks)", 10, VAL)
    set_mce("SET_MCE bank 1 corrected", 1, VAL | 0x11)
    bank("corrected", 1)
    set_mce("SET_MCE bank 1 corrected again", 1, VAL | 0x12, addr=0x2000)
    bank("corrected twice: OVER", 1)
    set_mce("SET_MCE bank 2 UCNA", 2, VAL | UC | 0x13)
    bank("UCNA", 2)
    set_mce("SET_MCE bank 2 corrected over a valid UC", 2, VAL | 0x14, addr=0x3000)
    bank("only OVER added", 2)
    events("nothing queued yet")
    set_mce("SET_MCE bank 3 UC|S, CR4.MCE clear", 3, VAL | UC | S, mcg_status=5)
    bank("not recorded", 3)
    events("triple fault requested")
    sregs = X.kvm_sregs()
    sys.ioctl(v, X.KVM_GET_SREGS, sregs)
    sregs.cr4 |= 1 << 6
    rec.call("SET_SREGS CR4.MCE", sys.ioctl, v, X.KVM_SET_SREGS, sregs)
    cv.set_msrs(sys, rec, "SET_MSRS MC4_CTL = 0", v, [(MC0_CTL + 16, 0)])
    set_mce("SET_MCE bank 4 UC|S|AR with MC4_CTL 0 (dropped)", 4, VAL | UC | S | AR, mcg_status=5)
    bank("dropped", 4)
    set_mce("SET_MCE bank 5 UC|PCC|S", 5, VAL | UC | PCC | S, addr=0x5000, mcg_status=5)
    bank("recorded", 5)
    events("#MC queued")
    set_mce("SET_MCE bank 6 UC|S with MCG_STATUS.MCIP (triple fault)", 6, VAL | UC | S,
            mcg_status=5)
    bank("not recorded", 6)
    cv.set_msrs(sys, rec, "SET_MSRS MCG_STATUS = 0, MCG_CTL = 0", v, [(MCG_STATUS, 0), (MCG_CTL, 0)])
    set_mce("SET_MCE bank 7 UC|S with MCG_CTL 0 (dropped)", 7, VAL | UC | S, mcg_status=5)
    bank("dropped", 7)
    # kvm_multiple_exception: #MC (benign) replaces a queued exception, after #DF it is a
    # triple fault
    vm2 = create_vm(sys, rec, kvm, label="KVM_CREATE_VM 2")
    enable(sys, rec, vm2, "VM 2: ENABLE_CAP X86_TRIPLE_FAULT_EVENT",
           K.KVM_CAP_X86_TRIPLE_FAULT_EVENT, 1)
    v2 = rec.call("VM 2: KVM_CREATE_VCPU 0", sys.ioctl, vm2, K.KVM_CREATE_VCPU, 0)
    _setup(sys, rec, v2, QEMU_MCG_CAP, "VM 2: SETUP_MCE")
    sys.ioctl(v2, X.KVM_GET_SREGS, sregs)
    sregs.cr4 |= 1 << 6
    rec.call("VM 2: SET_SREGS CR4.MCE", sys.ioctl, v2, X.KVM_SET_SREGS, sregs)
    for prev in (13, 8):
        ev = X.kvm_vcpu_events()
        ev.exception.injected, ev.exception.nr = 1, prev
        ev.exception.has_error_code = 1
        rec.call(f"VM 2: SET_VCPU_EVENTS exception {prev} injected", sys.ioctl, v2,
                 X.KVM_SET_VCPU_EVENTS, ev)
        set_mce(f"VM 2: SET_MCE bank 0 UC|S over exception {prev}", 0, VAL | UC | S, fd=v2)
        ev = X.kvm_vcpu_events()
        rec.call(f"VM 2: GET_VCPU_EVENTS after #MC over {prev}", sys.ioctl, v2,
                 X.KVM_GET_VCPU_EVENTS, ev)
        rec.record(f"VM 2: exception injected, pending, nr, error code; triple fault ({prev})",
                   (ev.exception.injected, ev.exception.pending, ev.exception.nr,
                    ev.exception.has_error_code, ev.triple_fault.pending))
        cv.set_msrs(sys, rec, "VM 2: SET_MSRS MCG_STATUS = 0", v2, [(MCG_STATUS, 0)])


@scenario("x86_mtrr_msrs",
          "host-initiated KVM_SET/GET_MSRS of the MTRRs (mtrr.c): MTRRcap read-only 0x508, "
          "deftype / fixed / variable checks (memory types, reserved bits, MAXPHYADDR of "
          "the vCPU's CPUID), indexes of the range without storage refused; QEMU 7.2's "
          "MTRR block in one call")
def x86_mtrr_msrs(sys, rec):
    kvm = open_kvm(sys, rec)
    _vm, v = _vcpu(sys, rec, kvm)
    everything = [MTRRCAP, DEFTYPE, *FIXED, *VAR]
    vals = cv.get_msrs(sys, rec, "GET_MSRS MTRRcap, deftype, fixed, variable", v, everything)
    rec.record("values", [hex(x) for x in vals])
    holes = [0x1FF, 0x210, 0x24F, 0x251, 0x257, 0x25A, 0x267, 0x270, 0x2FE]
    rec.record("indexes around them: (index, value, set, get, read)",
               _one_by_one(sys, v, [(i, 0) for i in holes]))
    rec.record("MTRRcap writes", _one_by_one(sys, v, [(MTRRCAP, 0), (MTRRCAP, 0x508)]))
    deftypes = (0, 6, 0xC06, 0x806, 0x406, 0xCFF, 0xC00, 2, 3, 7, 8, 0x100, 0x1000, 1 << 63)
    rec.record("deftype", _one_by_one(sys, v, [(DEFTYPE, x) for x in deftypes]))
    fixed = (0, 0x0606060606060606, 0x0001040506000104, 0x0606060606060602,
             0x0706060606060606, 0x0806060606060606, 0x0303030303030303)
    rec.record("fixed", _one_by_one(sys, v, [(i, x) for i in (0x250, 0x259, 0x26F)
                                             for x in fixed]))
    bases = (0, 6, 0x80000006, 0x80000000, 1 << 35 | 6, 1 << 36 | 6, 1 << 39 | 6, 1 << 40,
             0x106, 0x806, 2, 3, 7, 0x46, 0xFF)
    masks = (0, 0x800, 0xFFFFF800, 0xF_FFFF_F800, 0xFF_FFFF_F800, 1, 0x400, 0x7FF,
             1 << 36 | 0x800, 1 << 63)
    rec.record("variable base 0, mask 0, base 7, mask 7 (no CPUID: MAXPHYADDR 36)",
               _one_by_one(sys, v, [(i, x) for i in (0x200, 0x20E) for x in bases]
                           + [(i, x) for i in (0x201, 0x20F) for x in masks]))
    n = cv.set_msrs(sys, rec, "SET_MSRS deftype 0xC06, base 0 bad type, fixed64K", v,
                 [(DEFTYPE, 0xC06), (0x200, 2), (0x250, 0x0606060606060606)])
    rec.record("processed", n)
    vals = cv.get_msrs(sys, rec, "GET_MSRS deftype, base 0, fixed64K", v, [DEFTYPE, 0x200, 0x250])
    rec.record("values", [hex(x) for x in vals])
    # the guest's MAXPHYADDR comes from its CPUID 0x80000008 (the host's supported one)
    table, _ = cv.supported_cpuid(sys, kvm)
    rec.call("SET_CPUID2 (the supported table)", sys.ioctl, v, X.KVM_SET_CPUID2, table)
    rec.record("variable base 1 / mask 1 with the supported CPUID",
               _one_by_one(sys, v, [(0x202, x) for x in bases] + [(0x203, x) for x in masks]
                           + [(0x202, 1 << b | 6) for b in range(36, 64, 2)]
                           + [(0x203, 1 << b | 0x800) for b in range(36, 64, 2)]))
    qemu = [(DEFTYPE, 0)] + [(i, 0) for i in FIXED] + [(i, 0) for i in VAR]
    n = cv.set_msrs(sys, rec, "SET_MSRS QEMU 7.2's MTRR block (28 entries)", v, qemu)
    vals = cv.get_msrs(sys, rec, "GET_MSRS them back", v, [i for i, _ in qemu])
    rec.record("values", sorted(set(vals)))


@scenario("x86_dev_attr",
          "KVM_GET/HAS_DEVICE_ATTR on /dev/kvm: group 0 KVM_X86_XCOMP_GUEST_SUPP (the value), "
          "other attributes and groups -> ENXIO, flags ignored, EFAULT for the struct and "
          "(GET only) for addr")
def x86_dev_attr(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("CHECK_EXTENSION(SYS_ATTRIBUTES)", sys.ioctl, kvm, K.KVM_CHECK_EXTENSION,
             X.KVM_CAP_SYS_ATTRIBUTES)
    val = _u64(0x5555)
    for flags, group, attr in ((0, 0, 0), (1, 0, 0), (0xFFFFFFFF, 0, 0), (0, 0, 1),
                               (0, 0, 1 << 63), (0, 1, 0), (0, 2, 0), (0, 0xFFFFFFFF, 0)):
        a = X.kvm_device_attr(flags=flags, group=group, attr=attr, addr=ctypes.addressof(val))
        val.value = 0x5555
        rec.call(f"GET_DEVICE_ATTR flags={flags:#x} group={group:#x} attr={attr:#x}",
                 sys.ioctl, kvm, X.KVM_GET_DEVICE_ATTR, a)
        rec.record("value", hex(val.value))
        rec.call(f"HAS_DEVICE_ATTR flags={flags:#x} group={group:#x} attr={attr:#x}",
                 sys.ioctl, kvm, X.KVM_HAS_DEVICE_ATTR,
                 X.kvm_device_attr(flags=flags, group=group, attr=attr, addr=8))
    for group, attr in ((0, 0), (0, 1)):
        rec.call(f"GET_DEVICE_ATTR group={group} attr={attr} addr=8", sys.ioctl, kvm,
                 X.KVM_GET_DEVICE_ATTR, X.kvm_device_attr(group=group, attr=attr, addr=8))
    rec.call("GET_DEVICE_ATTR(8)", sys.ioctl, kvm, X.KVM_GET_DEVICE_ATTR, 8)
    rec.call("HAS_DEVICE_ATTR(8)", sys.ioctl, kvm, X.KVM_HAS_DEVICE_ATTR, 8)
    vm = create_vm(sys, rec, kvm)
    a = X.kvm_device_attr(group=0, attr=0, addr=ctypes.addressof(val))
    rec.call("GET_DEVICE_ATTR on a VM", sys.ioctl, vm, X.KVM_GET_DEVICE_ATTR, a)
    rec.call("HAS_DEVICE_ATTR on a VM", sys.ioctl, vm, X.KVM_HAS_DEVICE_ATTR, a)
