"""KVM_IRQ_LINE and KVM_IRQ_LINE_STATUS: a GSI raised or lowered by userspace, through the
VM's routing table to the in-kernel PIC, I/O APIC and MSI delivery, as far as the status
userspace reads back.

Linux 6.18: kvm_vm_ioctl_irq_line (x86.c: ENXIO without an in-kernel irqchip), kvm_set_irq
(virt/kvm/irqchip.c: -1, plus each route's non-negative result), kvm_pic_set_irq /
pic_set_irq1 / pic_update_irq (i8259.c), ioapic_set_irq (ioapic.c), kvm_set_msi /
kvm_irq_delivery_to_apic(_fast) / __apic_accept_irq (irq_comm.c, lapic.c). Every status
below was compared with the 6.18.44 host by the conformance scenario ``x86_irq_line``.

What is modelled: the PIC pins' IRR and edge memory (ELCR, IMR and ISR keep their reset
value 0: KVM_SET_IRQCHIP and the guest's port I/O to the PIC are not modelled, and no
guest acknowledges an interrupt, so the cascade of the slave raises the master's pin 2
whenever the slave has a request); the I/O APIC's IRR with every redirection entry masked
and edge-triggered (its reset state; the guest's MMIO to it is not modelled); MSI routes
delivered to the vCPUs of the APIC map (kmock.kvm.x86_lapic.apic_map) with the count of
LAPICs that accept. Nothing is delivered into the scripted guest.
"""

import errno
import threading
import weakref

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import kvm as K
from . import eventfds, x86_lapic, x86_vm

PIC_NUM_PINS = 16
#: kvm_set_msi_irq: the MSI address and data fields
MSI_DEST_MODE_LOGICAL = 1 << 2
MSI_REDIR_HINT = 1 << 3
MSI_TRIGGER_LEVEL = 1 << 15
APIC_DM_FIXED, APIC_DM_LOWEST, APIC_DM_SMI, APIC_DM_REMRD = 0, 1, 2, 3
APIC_DM_NMI, APIC_DM_INIT, APIC_DM_STARTUP, APIC_DM_EXTINT = 4, 5, 6, 7
APIC_BROADCAST = 0xFF
KVM_CAP_X86_SMM = 117


class _Pic:
    """One 8259 as kvm_kpic_state: irr and last_irr (imr, elcr, isr stay 0)."""

    __slots__ = ("irr", "last_irr")

    def __init__(self):
        self.irr = 0
        self.last_irr = 0

    def set_irq(self, pin, level):
        """pic_set_irq1 with ELCR 0 (edge) and IMR 0: 1, or 0 for a raise whose request
        is still pending (coalesced)."""
        mask = 1 << pin
        ret = 1
        if level:
            if not self.last_irr & mask:
                ret = int(not self.irr & mask)
                self.irr |= mask
            self.last_irr |= mask
        else:
            self.last_irr &= ~mask
        return ret


class IrqChips:
    """The in-kernel PIC pair and I/O APIC of one VM (KVM_CREATE_IRQCHIP)."""

    def __init__(self):
        self.lock = threading.Lock()  # pic_lock / ioapic->lock
        self.pics = (_Pic(), _Pic())
        self.ioapic_irr = 0

    def pic_set_irq(self, pin, level):
        """kvm_pic_set_irq: the pin, then pic_update_irq: a pending request of the slave
        (no IMR, no ISR: any) pulses the master's pin 2 (the cascade)."""
        master, slave = self.pics
        ret = self.pics[pin >> 3].set_irq(pin & 7, level)
        if slave.irr:
            master.set_irq(2, 1)
            master.set_irq(2, 0)
        return ret

    def ioapic_set_irq(self, pin, level):
        """ioapic_set_irq for a masked edge-triggered entry: lowering clears the IRR bit
        (1); a raise while the bit is set is coalesced (0); otherwise ioapic_service
        finds the entry masked (-1)."""
        mask = 1 << pin
        if not level:
            self.ioapic_irr &= ~mask
            return 1
        old = self.ioapic_irr
        self.ioapic_irr |= mask
        if old == self.ioapic_irr:
            return 0
        return -1


_CHIPS = weakref.WeakKeyDictionary()
_CHIPS_LOCK = threading.Lock()


def chips(vm):
    """The IrqChips of ``vm`` (made on first use)."""
    c = _CHIPS.get(vm)
    if c is None:
        with _CHIPS_LOCK:
            c = _CHIPS.get(vm)
            if c is None:
                c = _CHIPS[vm] = IrqChips()
    return c


# --- MSI delivery -------------------------------------------------------------------------


def _accepts(vm, vcpu, mode):
    """__apic_accept_irq's result for an MSI (level 1): fixed and lowest priority need
    a software-enabled APIC; SMI needs SMM (kvm_inject_smi); ExtINT is never accepted
    from here."""
    if mode in (APIC_DM_FIXED, APIC_DM_LOWEST):
        return int(x86_lapic.enabled(vcpu))
    if mode == APIC_DM_SMI:
        return int(bool(vm.caps.get(KVM_CAP_X86_SMM)))
    if mode == APIC_DM_EXTINT:
        return 0
    return 1  # REMRD, NMI, INIT, STARTUP


def _matches(vcpu, dest, logical):
    """kvm_apic_match_dest for a message without shorthand."""
    if logical:
        return x86_lapic.match_logical(vcpu, dest)
    return dest == x86_lapic.broadcast_id(vcpu) or dest == x86_lapic.apic_id(vcpu)


def deliver_msi(vm, address_lo, address_hi, data):
    """kvm_set_msi (level 1) -> kvm_irq_delivery_to_apic: the number of LAPICs that
    accepted, or -1 when no present LAPIC matched on the slow path."""
    dest = (address_lo >> 12) & 0xFF
    if x86_vm.state(vm).x2apic_api & x86_lapic.KVM_X2APIC_API_USE_32BIT_IDS:
        dest |= address_hi & 0xFFFFFF00
    logical = bool(address_lo & MSI_DEST_MODE_LOGICAL)
    mode = (data >> 8) & 7
    lowest = mode == APIC_DM_LOWEST or bool(address_lo & MSI_REDIR_HINT)
    if lowest and not logical and dest == APIC_BROADCAST:
        lowest, mode = False, APIC_DM_FIXED  # "phys broadcast and lowest prio": fixed
    members = x86_lapic.apic_map(vm)
    if members is not None and dest != APIC_BROADCAST:
        # kvm_irq_delivery_to_apic_fast: the map decides; a destination it lacks is 0
        if logical:
            targets = [v for v in members if x86_lapic.enabled(v) and _matches(v, dest, True)]
        else:
            targets = [v for v in members if _matches(v, dest, False)]
        if lowest and targets:
            targets = targets[:1]
        return sum(_accepts(vm, v, mode) for v in targets)
    r = -1
    chosen = None
    for vcpu in list(vm.vcpus.values()):
        if not x86_lapic.present(vcpu) or not _matches(vcpu, dest, logical):
            continue
        if not lowest:
            r = max(r, 0) + _accepts(vm, vcpu, mode)
        elif chosen is None and x86_lapic.enabled(vcpu):
            chosen = vcpu
    if chosen is not None:
        r = _accepts(vm, chosen, mode)
    return r


def set_msi(vm, address_lo, address_hi, data, level):
    """kvm_set_msi: -EINVAL for an address_hi with bits 7:0 under 32-bit x2APIC ids
    (kvm_msi_route_invalid), -1 for a lowering, else the delivery's result."""
    if x86_vm.state(vm).x2apic_api & x86_lapic.KVM_X2APIC_API_USE_32BIT_IDS and address_hi & 0xFF:
        return -errno.EINVAL
    if not level:
        return -1
    return deliver_msi(vm, address_lo, address_hi, data)


def vm_signal_msi(f, arg):
    """KVM_SIGNAL_MSI (kvm_send_userspace_msi): the struct (EFAULT); no in-kernel irqchip
    or flags beyond KVM_MSI_VALID_DEVID: EINVAL; then kvm_set_msi's value is the ioctl's:
    the number of LAPICs that accepted, or an error (-1 is EPERM: no LAPIC matched)."""
    vm = f.vm
    vm.check_caller()
    msi = copy_from_user(arg, K.kvm_msi)
    if not x86_vm.state(vm).irqchip_in_kernel or msi.flags & ~K.KVM_MSI_VALID_DEVID:
        raise oserror(errno.EINVAL)
    with chips(vm).lock:
        r = set_msi(vm, msi.address_lo, msi.address_hi, msi.data, 1)
    if r < 0:
        raise oserror(-r)
    return r


# --- kvm_set_irq --------------------------------------------------------------------------


def set_irq(vm, gsi, level):
    """kvm_set_irq: every route of ``gsi`` (kmock.kvm.eventfds.routes), -1 when none
    gives a non-negative result, else the sum of those."""
    ret = -1
    c = chips(vm)
    with c.lock:
        for e in eventfds.routes(vm):
            if e.gsi != gsi:
                continue
            if e.type == eventfds.KVM_IRQ_ROUTING_IRQCHIP:
                chip, pin = e.fields
                if chip == eventfds.KVM_IRQCHIP_IOAPIC:
                    r = c.ioapic_set_irq(pin, level)
                else:
                    r = c.pic_set_irq(pin + (8 if chip == eventfds.KVM_IRQCHIP_PIC_SLAVE else 0),
                                      level)
            elif e.type == eventfds.KVM_IRQ_ROUTING_MSI:
                r = set_msi(vm, *e.fields[:3], level)
            else:
                r = -1  # HV_SINT / Xen routes: not offered by the profiles kmock has
            if r >= 0:
                ret = r + max(ret, 0)
    return ret


def _irq_line(f, arg, status):
    vm = f.vm
    vm.check_caller()
    ev = copy_from_user(arg, K.kvm_irq_level)
    if not x86_vm.state(vm).irqchip_in_kernel:
        raise oserror(errno.ENXIO)
    ev.irq = set_irq(vm, ev.irq, ev.level) & 0xFFFFFFFF  # the union's s32 status
    if status:
        copy_to_user(arg, ev)
    return 0


def vm_irq_line(f, arg):
    """KVM_IRQ_LINE: the argument is read, nothing is written back."""
    return _irq_line(f, arg, False)


def vm_irq_line_status(f, arg):
    """KVM_IRQ_LINE_STATUS: the status is written over ``irq``."""
    return _irq_line(f, arg, True)
