"""Conformance scenario of the in-kernel LAPIC's interrupt state (kmock.kvm.x86_lapic,
kmock.kvm.x86_irq): what an accepted interrupt leaves in KVM_GET_LAPIC and
KVM_GET_VCPU_EVENTS before the vCPU ever runs."""

from ..uapi import kvm as K
from ..uapi import x86 as X
from .conformance import create_vm, open_kvm, scenario
from .conformance_x86_vm import enable, vcpu

IRR, TMR, ISR = 0x200, 0x180, 0x100


def _words(page, base):
    return tuple(hex(int.from_bytes(page[base + 16 * i:base + 16 * i + 4], "little"))
                 for i in range(8))


@scenario("x86_lapic_irr",
          "an interrupt the LAPIC accepts (__apic_accept_irq, no APICv) sets its IRR bit and "
          "sets or clears its TMR bit by trigger mode, vectors under 16 included; a "
          "software-disabled LAPIC takes nothing; an NMI message is queued as KVM_NMI "
          "(GET_VCPU_EVENTS nmi.pending); the I/O APIC's level-triggered entry sets TMR; "
          "KVM_SET_LAPIC replaces IRR and TMR")
def x86_lapic_irr(sys, rec):
    kvm = open_kvm(sys, rec)
    for mode in ("split", "kernel"):
        vm = create_vm(sys, rec, kvm, label=f"{mode}: KVM_CREATE_VM")
        if mode == "split":
            enable(sys, rec, vm, "split: SPLIT_IRQCHIP 24", K.KVM_CAP_SPLIT_IRQCHIP, 24)
        else:
            rec.call("kernel: KVM_CREATE_IRQCHIP", sys.ioctl, vm, K.KVM_CREATE_IRQCHIP, 0)
        cpu = vcpu(sys, rec, vm, 0, f"{mode}: KVM_CREATE_VCPU 0")
        if cpu is None:
            return

        def state(label):
            page = bytearray(1024)
            rec.call(f"{mode}, {label}: GET_LAPIC", sys.ioctl, cpu, X.KVM_GET_LAPIC, page)
            rec.record(f"{mode}, {label}: IRR", _words(page, IRR))
            rec.record(f"{mode}, {label}: TMR", _words(page, TMR))
            rec.record(f"{mode}, {label}: ISR", _words(page, ISR))
            ev = X.kvm_vcpu_events()
            rec.call(f"{mode}, {label}: GET_VCPU_EVENTS", sys.ioctl, cpu,
                     X.KVM_GET_VCPU_EVENTS, ev)
            rec.record(f"{mode}, {label}: nmi pending, injected", (ev.nmi.pending, ev.nmi.injected))
            return page

        def msi(label, data, lo=0xFEE00000):
            rec.call(f"{mode}: MSI {label}", sys.ioctl, vm, K.KVM_SIGNAL_MSI,
                     K.kvm_msi(address_lo=lo, data=data))

        page = state("fresh")
        msi("0x30 to a disabled LAPIC", 0x0030)
        state("SVR disabled")
        page[0xF0:0xF4] = (0x1FF).to_bytes(4, "little")
        rec.call(f"{mode}: SET_LAPIC SVR 0x1ff", sys.ioctl, cpu, X.KVM_SET_LAPIC, bytes(page))
        msi("0x30 edge", 0x0030)
        msi("0x30 edge again", 0x0030)
        msi("0x41 level assert", 0xC041)
        msi("0x42 level deassert", 0x8042)
        msi("0xff lowest priority", 0x01FF)
        msi("0x10 (a vector under 16)", 0x0010)
        msi("0x41 edge (TMR cleared)", 0x0041)
        msi("0x77 logical, LDR 0 (nobody)", 0x0077, lo=0xFEE01004)
        state("after fixed MSIs")
        msi("NMI", 0x0400)
        state("after an NMI")
        msi("NMI again", 0x0400)
        state("after two NMIs")
        rec.call(f"{mode}: KVM_NMI", sys.ioctl, cpu, X.KVM_NMI, 0)
        state("after KVM_NMI")
        if mode == "kernel":
            # I/O APIC pin 9, level-triggered, vector 0x51, to APIC 0 (low dword then high)
            chip = X.kvm_irqchip(chip_id=K.KVM_IRQCHIP_IOAPIC)
            rec.call("kernel: GET_IRQCHIP ioapic", sys.ioctl, vm, X.KVM_GET_IRQCHIP, chip)
            chip.chip.ioapic.redirtbl[9] = 0x51 | 1 << 15
            rec.call("kernel: SET_IRQCHIP ioapic", sys.ioctl, vm, X.KVM_SET_IRQCHIP, chip)
            ev = K.kvm_irq_level(irq=9, level=1)
            rec.call("kernel: IRQ_LINE_STATUS 9 up", sys.ioctl, vm, K.KVM_IRQ_LINE_STATUS, ev)
            rec.record("kernel: IRQ_LINE_STATUS 9 up: status", ev.status)
            state("after the I/O APIC's level pin")
        page = bytearray(1024)
        sys.ioctl(cpu, X.KVM_GET_LAPIC, page)
        page[IRR:IRR + 128] = bytes(128)
        page[IRR + 0x30:IRR + 0x34] = (1 << 5).to_bytes(4, "little")  # vector 0x65
        rec.call(f"{mode}: SET_LAPIC new IRR", sys.ioctl, cpu, X.KVM_SET_LAPIC, bytes(page))
        state("after SET_LAPIC")
        sys.close(cpu)
        sys.close(vm)


@scenario("x86_vcpu_initial_mp_state",
          "kvm_arch_vcpu_create: without an in-kernel irqchip every vCPU starts RUNNABLE; with "
          "one (full or split) only the BSP (KVM_SET_BOOT_CPU_ID's) does, the others start "
          "UNINITIALIZED (waiting for INIT/SIPI)")
def x86_vcpu_initial_mp_state(sys, rec):
    kvm = open_kvm(sys, rec)
    for mode in ("none", "kernel", "split", "boot cpu 1"):
        vm = create_vm(sys, rec, kvm, label=f"{mode}: KVM_CREATE_VM")
        if mode == "split":
            enable(sys, rec, vm, "split: SPLIT_IRQCHIP 24", K.KVM_CAP_SPLIT_IRQCHIP, 24)
        elif mode != "none":
            rec.call(f"{mode}: KVM_CREATE_IRQCHIP", sys.ioctl, vm, K.KVM_CREATE_IRQCHIP, 0)
        if mode == "boot cpu 1":
            rec.call("boot cpu 1: KVM_SET_BOOT_CPU_ID 1", sys.ioctl, vm, K.KVM_SET_BOOT_CPU_ID, 1)
        for i in range(3):
            cpu = vcpu(sys, rec, vm, i, f"{mode}: KVM_CREATE_VCPU {i}")
            if cpu is None:
                continue
            mp = X.kvm_mp_state()
            rec.call(f"{mode}: vCPU {i}: GET_MP_STATE", sys.ioctl, cpu, X.KVM_GET_MP_STATE, mp)
            rec.record(f"{mode}: vCPU {i}: mp_state", mp.mp_state)
        sys.close(vm)
