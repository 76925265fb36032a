"""Conformance scenario of the PIT's channel-0 timer (kmock.kvm.x86_pit): what its ticks
leave in the PIC's and the I/O APIC's IRR, read with KVM_GET_IRQCHIP, as time passes.

Times are short (a 1 ms period) and every wait is at least 30 times the period; a check
that something has not fired yet records whether the time that passed reached the period,
so a slow moment cannot make the scenario differ."""

import time

from ..uapi import kvm as K
from ..uapi import x86 as X
from .conformance import create_vm, open_kvm, scenario

#: a count of 1193 at 1193182 Hz: a 1 ms period
ONE_MS = 1193
WAIT = 0.03


@scenario("x86_pit_tick",
          "channel 0 of the in-kernel PIT ticks (create_pit_timer, pit_timer_fn, pit_do_work): "
          "a periodic or one-shot mode raises and lowers GSI 0, the PIC's IRR bit 0 stays "
          "set, the I/O APIC's does not (lowered); in reinject mode only the first tick "
          "injects until the guest acknowledges, without it every tick does; mode 0xff or the "
          "HPET legacy flag stops it; while userspace holds GSI 0 high the PIC sees no edge "
          "and the I/O APIC's IRR stays set")
def x86_pit_tick(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    rec.call("KVM_CREATE_IRQCHIP", sys.ioctl, vm, K.KVM_CREATE_IRQCHIP, 0)
    if rec.call("KVM_CREATE_PIT2", sys.ioctl, vm, X.KVM_CREATE_PIT2,
                X.kvm_pit_config(flags=X.KVM_PIT_SPEAKER_DUMMY)) is None:
        return

    def irr(label=None):
        """The PIC's and the I/O APIC's IRR bit 0, recorded under ``label``."""
        pic = X.kvm_irqchip(chip_id=K.KVM_IRQCHIP_PIC_MASTER)
        sys.ioctl(vm, X.KVM_GET_IRQCHIP, pic)
        io = X.kvm_irqchip(chip_id=K.KVM_IRQCHIP_IOAPIC)
        sys.ioctl(vm, X.KVM_GET_IRQCHIP, io)
        bits = (pic.chip.pic.irr & 1, io.chip.ioapic.irr & 1)
        if label is not None:
            rec.record(f"{label}: PIC IRR, I/O APIC IRR bit 0", bits)
        return bits[0]

    def clear():
        for chip_id, field in ((K.KVM_IRQCHIP_PIC_MASTER, "pic"), (K.KVM_IRQCHIP_IOAPIC, "ioapic")):
            c = X.kvm_irqchip(chip_id=chip_id)
            sys.ioctl(vm, X.KVM_GET_IRQCHIP, c)
            getattr(c.chip, field).irr = 0
            sys.ioctl(vm, X.KVM_SET_IRQCHIP, c)

    def program(label, mode, count, flags=0):
        ps = X.kvm_pit_state2()
        sys.ioctl(vm, X.KVM_GET_PIT2, ps)
        ps.channels[0].mode, ps.channels[0].count, ps.flags = mode, count, flags
        rec.call(label, sys.ioctl, vm, X.KVM_SET_PIT2, ps)

    def reinject(on):
        rec.call(f"REINJECT_CONTROL {on}", sys.ioctl, vm, X.KVM_REINJECT_CONTROL,
                 X.kvm_reinject_control(pit_reinject=on))

    irr("fresh")
    time.sleep(WAIT)
    irr("a fresh PIT (mode 0xff) after 30 ms")
    program("SET_PIT2 mode 2, 1 ms", 2, ONE_MS)
    time.sleep(WAIT)
    irr("mode 2 after 30 ms")
    clear()
    time.sleep(WAIT)
    irr("cleared, reinject on, 30 ms later")
    reinject(0)
    time.sleep(WAIT)
    irr("reinject off, 30 ms later")
    clear()
    time.sleep(WAIT)
    irr("cleared again, reinject off, 30 ms later")
    reinject(1)
    clear()
    time.sleep(WAIT)
    irr("reinject on again, cleared, 30 ms later")
    program("SET_PIT2 mode 0xff", 0xFF, ONE_MS)
    clear()
    time.sleep(WAIT)
    irr("mode 0xff, cleared, 30 ms later")
    program("SET_PIT2 mode 0 (one-shot), 1 ms", 0, ONE_MS)
    time.sleep(WAIT)
    irr("mode 0 after 30 ms")
    clear()
    program("SET_PIT2 mode 2 with HPET legacy", 2, ONE_MS, X.KVM_PIT_FLAGS_HPET_LEGACY)
    time.sleep(WAIT)
    irr("HPET legacy, 30 ms later")
    program("SET_PIT2 mode 2, HPET legacy off", 2, ONE_MS)
    time.sleep(WAIT)
    irr("HPET legacy off, 30 ms later")
    clear()
    t0 = time.monotonic()
    program("SET_PIT2 mode 3, count 0 (65536: 54.9 ms)", 3, 0)
    time.sleep(0.01)
    fired = irr()  # (timing-dependent: only the property below is recorded)
    rec.record("mode 3, count 0: fired only once its period passed",
               not fired or time.monotonic() - t0 >= 0.0549)
    time.sleep(0.1)
    irr("mode 3, count 0, 110 ms later")
    rec.call("IRQ_LINE GSI 0 high", sys.ioctl, vm, K.KVM_IRQ_LINE, K.kvm_irq_level(irq=0, level=1))
    clear()
    program("SET_PIT2 mode 2, 1 ms, GSI 0 held high", 2, ONE_MS)
    time.sleep(WAIT)
    irr("userspace holds GSI 0 high, 30 ms later")
    sys.close(vm)
