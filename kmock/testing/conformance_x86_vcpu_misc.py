"""Conformance scenarios of kmock.kvm.x86_vcpu_misc: KVM_INTERRUPT under each irqchip
mode, the vCPU TSC-offset attribute, KVM_TRANSLATE, the legacy KVM_SET_CPUID and
ONE_REG / KVM_GET_REG_LIST on x86. TSC offsets differ per host: recorded as properties."""

import ctypes

from ..uapi import kvm as K
from ..uapi import x86 as X
from .conformance import create_vm, open_kvm, scenario
from .conformance_x86_vm import enable, vcpu

#: an address no process maps (the kernel's copy faults: EFAULT)
BAD = 8


def _vm_cpu(sys, rec, kvm, mode):
    vm = create_vm(sys, rec, kvm, label=f"{mode}: KVM_CREATE_VM")
    if mode == "irqchip":
        rec.call("irqchip: KVM_CREATE_IRQCHIP", sys.ioctl, vm, K.KVM_CREATE_IRQCHIP, 0)
    elif mode == "split":
        enable(sys, rec, vm, "split: ENABLE_CAP(SPLIT_IRQCHIP, 24)", K.KVM_CAP_SPLIT_IRQCHIP, 24)
    return vm, vcpu(sys, rec, vm, 0, f"{mode}: KVM_CREATE_VCPU 0")


@scenario("x86_vcpu_interrupt",
          "KVM_INTERRUPT (kvm_vcpu_ioctl_interrupt): irq >= 256 EINVAL; no irqchip: the "
          "vector is queued (GET_VCPU_EVENTS interrupt.injected, the SREGS bitmap) and "
          "replaced by the next; in-kernel PIC ENXIO; split irqchip: EEXIST while one waits")
def x86_vcpu_interrupt(sys, rec):
    kvm = open_kvm(sys, rec)
    for mode in ("none", "irqchip", "split"):
        _, cpu = _vm_cpu(sys, rec, kvm, mode)
        for irq in (256, 0x20, 0x21):
            rec.call(f"{mode}: INTERRUPT {irq:#x}", sys.ioctl, cpu, X.KVM_INTERRUPT,
                     X.kvm_interrupt(irq))
        ev = X.kvm_vcpu_events()
        rec.call(f"{mode}: GET_VCPU_EVENTS", sys.ioctl, cpu, X.KVM_GET_VCPU_EVENTS, ev)
        rec.record(f"{mode}: interrupt injected, nr, soft",
                   (ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft))
        s = X.kvm_sregs()
        rec.call(f"{mode}: GET_SREGS", sys.ioctl, cpu, X.KVM_GET_SREGS, s)
        rec.record(f"{mode}: interrupt_bitmap", tuple(s.interrupt_bitmap))
    rec.call("NULL", sys.ioctl, cpu, X.KVM_INTERRUPT, 0)


@scenario("x86_vcpu_tsc_attr",
          "KVM_HAS/GET/SET_DEVICE_ATTR on a vCPU (kvm_arch_tsc_has/get/set_attr): group "
          "KVM_VCPU_TSC_CTRL attr KVM_VCPU_TSC_OFFSET only (else ENXIO, flags unchecked), "
          "EFAULT for a bad addr; SET makes the offset the guest TSC's (IA32_TSC)")
def x86_vcpu_tsc_attr(sys, rec):
    from .conformance_vcpu import msrs_buf

    kvm = open_kvm(sys, rec)
    _, cpu = _vm_cpu(sys, rec, kvm, "none")
    val = ctypes.c_uint64()
    ptr = ctypes.addressof(val)
    for group, attr, flags in ((0, 0, 0), (0, 0, 1), (0, 1, 0), (1, 0, 0), (2, 0, 0)):
        a = X.kvm_device_attr(flags=flags, group=group, attr=attr, addr=ptr)
        label = f"group {group} attr {attr} flags {flags}"
        rec.call(f"HAS {label}", sys.ioctl, cpu, X.KVM_HAS_DEVICE_ATTR, a)
        rec.call(f"GET {label}", sys.ioctl, cpu, X.KVM_GET_DEVICE_ATTR, a)
    bad = X.kvm_device_attr(addr=BAD)
    rec.call("GET bad addr", sys.ioctl, cpu, X.KVM_GET_DEVICE_ATTR, bad)
    rec.call("SET bad addr", sys.ioctl, cpu, X.KVM_SET_DEVICE_ATTR, bad)
    rec.call("GET NULL", sys.ioctl, cpu, X.KVM_GET_DEVICE_ATTR, 0)
    before = val.value
    val.value = offset = 1 << 40
    rec.call("SET offset 2^40", sys.ioctl, cpu, X.KVM_SET_DEVICE_ATTR,
             X.kvm_device_attr(addr=ptr))
    out = ctypes.c_uint64()
    sys.ioctl(cpu, X.KVM_GET_DEVICE_ATTR, X.kvm_device_attr(addr=ctypes.addressof(out)))
    took = out.value == offset
    rec.record("GET after SET: 2^40 (a writable TSC) or the offset before", took or
               out.value == before)
    buf = msrs_buf([(0x10, 0)])
    rec.call("GET_MSRS IA32_TSC", sys.ioctl, cpu, X.KVM_GET_MSRS, buf)
    tsc = int.from_bytes(buf[16:24], "little")
    # with the offset taken the guest TSC is at least 2^40 past the host's: at most a
    # few years of host TSC lie below 2^40 + 2^62
    rec.record("guest TSC follows the GET offset",
               (tsc >= offset) if took else (tsc < offset + (1 << 62)))


@scenario("x86_vcpu_translate",
          "KVM_TRANSLATE (kvm_arch_vcpu_ioctl_translate) with paging off (reset state): "
          "gpa = the linear address (64 bits), valid unless ~0, writeable 1, usermode 0")
def x86_vcpu_translate(sys, rec):
    kvm = open_kvm(sys, rec)
    _, cpu = _vm_cpu(sys, rec, kvm, "none")
    for la in (0, 0x12345678, 0xFFFFFFFF12345678, (1 << 64) - 1):
        tr = X.kvm_translation(linear_address=la)
        rec.call(f"TRANSLATE {la:#x}", sys.ioctl, cpu, X.KVM_TRANSLATE, tr)
        rec.record(f"{la:#x}: gpa, valid, writeable, usermode",
                   (hex(tr.physical_address), tr.valid, tr.writeable, tr.usermode))
    rec.call("TRANSLATE NULL", sys.ioctl, cpu, X.KVM_TRANSLATE, 0)


def _legacy_cpuid(entries, nent=None):
    buf = bytearray(8 + 24 * len(entries))
    buf[0:4] = (len(entries) if nent is None else nent).to_bytes(4, "little")
    for i, e in enumerate(entries):
        ce = X.kvm_cpuid_entry(*e)
        buf[8 + 24 * i:8 + 24 * (i + 1)] = bytes(ce)
    return buf


@scenario("x86_vcpu_set_cpuid_legacy",
          "KVM_SET_CPUID (kvm_vcpu_ioctl_set_cpuid): nent > 256 E2BIG, NULL EFAULT; the "
          "entries become cpuid2 entries (index 0, flags 0) that GET_CPUID2 returns; "
          "kvm_set_cpuid's checks (a 0x80000008 virtual width other than 0/48/57 EINVAL)")
def x86_vcpu_set_cpuid_legacy(sys, rec):
    kvm = open_kvm(sys, rec)
    _, cpu = _vm_cpu(sys, rec, kvm, "none")
    rec.call("NULL", sys.ioctl, cpu, X.KVM_SET_CPUID, 0)
    rec.call("nent 257", sys.ioctl, cpu, X.KVM_SET_CPUID, _legacy_cpuid([], 257))
    rec.call("width 40", sys.ioctl, cpu, X.KVM_SET_CPUID,
             _legacy_cpuid([(0x80000000, 0x80000008), (0x80000008, 0x2830)]))
    # no leaf 1: the PVM probe host's SET_CPUID(2) adds leaf 0xD and fills leaf 1 when
    # the table has leaf 1 (a patch outside mainline; kmock does not model it)
    rec.call("two entries", sys.ioctl, cpu, X.KVM_SET_CPUID,
             _legacy_cpuid([(0, 1, 2, 3, 4, 99), (0x80000001, 5, 6, 7, 8)]))
    out = bytearray(8 + 40 * 4)
    out[0:4] = (4).to_bytes(4, "little")
    rec.call("GET_CPUID2", sys.ioctl, cpu, X.KVM_GET_CPUID2, out)
    n = int.from_bytes(out[0:4], "little")
    got = [K.kvm_cpuid_entry2.from_buffer_copy(out, 8 + 40 * i) for i in range(min(n, 4))]
    rec.record("GET_CPUID2 entries", tuple(
        (e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in got))
    rec.call("zero entries", sys.ioctl, cpu, X.KVM_SET_CPUID, _legacy_cpuid([]))


@scenario("x86_vcpu_one_reg",
          "x86 ONE_REG (kvm_get_set_one_reg) and KVM_GET_REG_LIST (kvm_get_reg_list): MSR "
          "ids reach do_get/set_msr, other types/sizes/reserved bits and GUEST_SSP without "
          "SHSTK EINVAL, bad addresses EFAULT; the list is empty without SHSTK")
def x86_vcpu_one_reg(sys, rec):
    kvm = open_kvm(sys, rec)
    _, cpu = _vm_cpu(sys, rec, kvm, "none")
    val = ctypes.c_uint64()
    ptr = ctypes.addressof(val)

    def one(label, req, rid, addr=ptr):
        return rec.call(label, sys.ioctl, cpu, req, X.kvm_one_reg(rid, addr))

    pat = X.KVM_X86_REG_MSR(0x277)
    one("GET PAT", X.KVM_GET_ONE_REG, pat)
    rec.record("PAT value", hex(val.value))
    one("GET TSC", X.KVM_GET_ONE_REG, X.KVM_X86_REG_MSR(0x10))
    rec.record("TSC nonzero", val.value != 0)
    for label, rid in (("unknown MSR", X.KVM_X86_REG_MSR(0x12345678)),
                       ("GUEST_SSP", X.KVM_X86_REG_KVM(X.KVM_REG_GUEST_SSP)),
                       ("KVM reg 1", X.KVM_X86_REG_KVM(1)),
                       ("size u32", pat & ~X.KVM_REG_SIZE_MASK | 0x0020000000000000),
                       ("rsvd1", pat | 1 << 40), ("rsvd2", pat | 1 << 48),
                       ("type 1", pat & ~(0xFF << 32) | 1 << 32),
                       ("arm64 arch", pat & ~X.KVM_REG_ARCH_MASK | 0x6000000000000000),
                       ("id 0", 0)):
        one(f"GET {label}", X.KVM_GET_ONE_REG, rid)
        one(f"SET {label}", X.KVM_SET_ONE_REG, rid)
    one("GET PAT bad addr", X.KVM_GET_ONE_REG, pat, BAD)
    one("SET PAT bad addr", X.KVM_SET_ONE_REG, pat, BAD)
    rec.call("GET NULL", sys.ioctl, cpu, X.KVM_GET_ONE_REG, 0)
    val.value = 0x0007040600070406
    one("SET PAT default", X.KVM_SET_ONE_REG, pat)
    val.value = 0x0606060606060606
    one("SET PAT all WB", X.KVM_SET_ONE_REG, pat)
    val.value = 0
    one("GET PAT after", X.KVM_GET_ONE_REG, pat)
    rec.record("PAT after", hex(val.value))
    for n in (0, 4):
        lst = (ctypes.c_uint64 * 5)(n)
        rec.call(f"GET_REG_LIST n={n}", sys.ioctl, cpu, X.KVM_GET_REG_LIST, lst)
        rec.record(f"n={n}: n written", lst[0])
    rec.call("GET_REG_LIST NULL", sys.ioctl, cpu, X.KVM_GET_REG_LIST, 0)


@scenario("x86_vcpu_mem_enc_op",
          "KVM_MEMORY_ENCRYPT_OP on the vCPU of a DEFAULT VM: ENOTTY where the vendor module "
          "has no vcpu_mem_enc_ioctl (this host's VMX without CONFIG_KVM_INTEL_TDX; SVM), the "
          "VM's own KVM_MEMORY_ENCRYPT_OP ENOTTY too (no mem_enc_ioctl)")
def x86_vcpu_mem_enc_op(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    cpu = vcpu(sys, rec, vm, 0)
    if cpu is None:
        return
    buf = bytearray(64)
    rec.call("on the vCPU", sys.ioctl, cpu, K.KVM_MEMORY_ENCRYPT_OP, buf)
    rec.call("on the vCPU, NULL", sys.ioctl, cpu, K.KVM_MEMORY_ENCRYPT_OP, 0)
    rec.call("on the VM", sys.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, buf)


@scenario("x86_pv_msrs_lapic",
          "host-initiated KVM_SET_MSRS of the KVM async-PF MSRs and PV EOI with no irqchip, "
          "the split and the full one (kvm_pv_enable_async_pf: only 0 without an in-kernel "
          "LAPIC, bits 5:4 reserved; kvm_pv_enable_async_pf_int: only with one, the vector "
          "only): QEMU -cpu host writes MSR_KVM_ASYNC_PF_INT at reset")
def x86_pv_msrs_lapic(sys, rec):
    from .conformance_vcpu import msrs_buf, msrs_values

    kvm = open_kvm(sys, rec)
    for mode in ("no irqchip", "split irqchip", "full irqchip"):
        vm = create_vm(sys, rec, kvm, label=f"{mode}: KVM_CREATE_VM")
        if mode == "split irqchip":
            enable(sys, rec, vm, f"{mode}: SPLIT_IRQCHIP 24", K.KVM_CAP_SPLIT_IRQCHIP, 24)
        elif mode == "full irqchip":
            rec.call(f"{mode}: KVM_CREATE_IRQCHIP", sys.ioctl, vm, K.KVM_CREATE_IRQCHIP, 0)
        cpu = vcpu(sys, rec, vm, 0, label=f"{mode}: KVM_CREATE_VCPU 0")
        if cpu is None:
            continue
        for index, values in ((0x4B564D02, (0, 1, 0x1001, 0x10, 0x20, 0x2, 0x4, 0x8)),
                              (0x4B564D06, (0, 0xEC, 0x100)),
                              (0x4B564D04, (0, 1, 0x1001, 0x1002))):
            for value in values:
                rec.call(f"{mode}: SET {index:#x} = {value:#x}", sys.ioctl, cpu,
                         X.KVM_SET_MSRS, msrs_buf([(index, value)]))
            buf = msrs_buf([(index, 0)])
            if rec.call(f"{mode}: GET {index:#x}", sys.ioctl, cpu, X.KVM_GET_MSRS, buf) == 1:
                rec.record(f"{mode}: {index:#x} reads", hex(msrs_values(buf, 1)[0]))
