"""The in-kernel PIC pair and I/O APIC of KVM_CREATE_IRQCHIP: KVM_IRQ_LINE(_STATUS),
KVM_SIGNAL_MSI and KVM_GET/SET_IRQCHIP, as far as the state and status userspace reads back.

Linux 6.18: kvm_vm_ioctl_irq_line (irq.c: ENXIO without an in-kernel irqchip), kvm_set_irq
(virt/kvm/irqchip.c: -1, plus each route's non-negative result), kvm_pic_set_irq /
pic_set_irq1 / pic_get_irq / pic_update_irq (i8259.c), ioapic_set_irq / ioapic_service /
kvm_get_ioapic / kvm_set_ioapic (ioapic.c), kvm_set_msi / kvm_irq_delivery_to_apic(_fast)
(irq.c) / __apic_accept_irq (lapic.c), kvm_vm_ioctl_get/set_irqchip (irq.c) and their
checks in kvm_arch_vm_ioctl (x86.c). Every status and state below was compared with the
6.18.44 host by the conformance scenarios ``x86_irq_line`` and ``x86_irqchip_state``.

What is modelled: each 8259 as struct kvm_kpic_state (the 16 bytes of kvm_pic_state, all
kept as KVM_SET_IRQCHIP wrote them, ELCR beyond elcr_mask included, as the kernel's memcpy
does): edge and level (ELCR) pins, IMR (a masked pin's status is -1), the priority
resolution with ISR, priority_add and special fully nested mode that decides whether the
slave's request reaches the master's pin 2. The I/O APIC as struct kvm_ioapic: base,
IOREGSEL, id, pad and the 24 redirection entries as written, IRR with irr_delivered
(GET_IRQCHIP reports IRR minus the delivered edges), remote IRR of level-triggered entries
(set by a delivery whose result is non-zero, as ioapic_service does: -1 too), unmasked
entries delivered through the APIC map like an MSI (kmock.kvm.x86_lapic), and the RTC's
(GSI 8) coalescing for KVM_IRQ_LINE_STATUS (rtc_status.pending_eoi).

Not modelled: the guest's port I/O to the PIC and MMIO to the I/O APIC, interrupt
acknowledge and EOI (no guest takes an interrupt: ISR and remote IRR change only through
KVM_SET_IRQCHIP), the LAPIC's IRR (a delivery is counted, not queued: GET_LAPIC does not
show it). The RTC's EOI tracking that kvm_set_ioapic recomputes from the LAPICs' IRR/ISR
is kept here instead: a vCPU that accepted a vector from the I/O APIC or an MSI keeps it
pending (no guest EOIs it; a KVM_SET_LAPIC that clears it is not seen). The PIT's ticks
(kmock.kvm.x86_pit) are not delivered: the irq_states of other sources stay 0.
"""

import errno
import threading

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import kvm as K
from ..uapi import x86 as X
from . import eventfds, x86_lapic, x86_state, x86_vm
from .attached import Attached

PIC_NUM_PINS = 16
IOAPIC_NUM_PINS = X.KVM_IOAPIC_NUM_PINS
#: ioapic.h: the RTC's GSI, whose coalescing KVM_IRQ_LINE_STATUS reports
RTC_GSI = 8
#: kvm_create_pic: the ELCR bits the guest may write (kept for GET_IRQCHIP only)
ELCR_MASK = (0xF8, 0xDE)
#: kvm_set_msi_irq: the MSI address and data fields
MSI_DEST_MODE_LOGICAL = 1 << 2
MSI_REDIR_HINT = 1 << 3
#: MSI_DATA_TRIGGER_LEVEL (msi_msg_data.is_level): kvm_set_msi_irq's trig_mode
MSI_DATA_TRIGGER_LEVEL = 1 << 15
MSI_TRIGGER_LEVEL = 1 << 15
APIC_DM_FIXED, APIC_DM_LOWEST, APIC_DM_SMI, APIC_DM_REMRD = 0, 1, 2, 3
APIC_DM_NMI, APIC_DM_INIT, APIC_DM_STARTUP, APIC_DM_EXTINT = 4, 5, 6, 7
APIC_BROADCAST = 0xFF
KVM_CAP_X86_SMM = 117
PIC_FIELDS = tuple(name for name, _ in X.kvm_pic_state._fields_)


class _Pic:
    """One 8259 as struct kvm_kpic_state (its kvm_pic_state fields, u8 each)."""

    __slots__ = PIC_FIELDS

    def __init__(self, elcr_mask):
        for name in PIC_FIELDS:
            setattr(self, name, 0)
        self.elcr_mask = elcr_mask

    def state(self):
        return X.kvm_pic_state(*(getattr(self, n) for n in PIC_FIELDS))

    def load(self, st):
        for name in PIC_FIELDS:
            setattr(self, name, getattr(st, name))

    def set_irq1(self, pin, level):
        """pic_set_irq1: 1, 0 for a raise whose request is still pending (coalesced),
        -1 whatever happened when the pin is masked in IMR."""
        mask = 1 << pin
        ret = 1
        if self.elcr & mask:  # level triggered
            if level:
                ret = int(not self.irr & mask)
                self.irr |= mask
                self.last_irr |= mask
            else:
                self.irr &= ~mask
                self.last_irr &= ~mask
        elif level:  # edge triggered
            if not self.last_irr & mask:
                ret = int(not self.irr & mask)
                self.irr |= mask
            self.last_irr |= mask
        else:
            self.last_irr &= ~mask
        return -1 if self.imr & mask else ret

    def _priority(self, mask):
        """get_priority: the highest priority in ``mask`` (0 highest), 8 for none."""
        if not mask:
            return 8
        p = 0
        while not mask & (1 << ((p + self.priority_add) & 7)):
            p += 1
        return p

    def get_irq(self, master):
        """pic_get_irq: the pin the PIC requests, -1 for none."""
        priority = self._priority(self.irr & ~self.imr)
        if priority == 8:
            return -1
        mask = self.isr
        if self.special_fully_nested_mode and master:
            mask &= ~(1 << 2)
        if priority < self._priority(mask):
            return (priority + self.priority_add) & 7
        return -1


class _Ioapic:
    """struct kvm_ioapic: the kvm_ioapic_state part, irr_delivered and the RTC's EOI
    tracking (rtc_status: the vCPUs that accepted the RTC's interrupt)."""

    __slots__ = ("base_address", "id", "ioregsel", "irr", "irr_delivered", "pad", "redirtbl",
                 "rtc_dest")

    def __init__(self):
        # kvm_ioapic_reset on a zeroed struct: every entry masked, the default base
        self.base_address = X.IOAPIC_DEFAULT_BASE_ADDRESS
        self.ioregsel = self.id = self.irr = self.pad = self.irr_delivered = 0
        self.redirtbl = [X.IOAPIC_REDIR_MASK] * IOAPIC_NUM_PINS
        self.rtc_dest = {}  # vcpu -> vector (rtc_status.dest_map)

    def state(self):
        st = X.kvm_ioapic_state(base_address=self.base_address, ioregsel=self.ioregsel,
                                id=self.id, irr=self.irr & ~self.irr_delivered & 0xFFFFFFFF,
                                pad=self.pad)
        st.redirtbl[:] = self.redirtbl
        return st


class IrqChips:
    """The in-kernel PIC pair and I/O APIC of one VM (KVM_CREATE_IRQCHIP)."""

    def __init__(self):
        self.lock = threading.Lock()  # pic_lock / ioapic->lock
        self.pics = (_Pic(ELCR_MASK[0]), _Pic(ELCR_MASK[1]))
        self.ioapic = _Ioapic()
        #: gsi -> the level userspace's IRQ source (KVM_IRQ_LINE, irqfds) holds it at; the
        #: PIT is the other source (irq_states: a line is the OR of its sources)
        self.user_levels = {}

    @property
    def ioapic_irr(self):
        return self.ioapic.irr

    # --- PIC ------------------------------------------------------------------------------

    def pic_update_irq(self):
        """pic_update_irq: a request of the slave pulses the master's pin 2 (the cascade);
        the master's output to the vCPUs is not modelled."""
        master, slave = self.pics
        if slave.get_irq(False) >= 0:
            master.set_irq1(2, 1)
            master.set_irq1(2, 0)

    def pic_set_irq(self, pin, level):
        """kvm_pic_set_irq: the pin, then pic_update_irq."""
        ret = self.pics[pin >> 3].set_irq1(pin & 7, level)
        self.pic_update_irq()
        return ret

    # --- I/O APIC -------------------------------------------------------------------------

    def ioapic_set_irq(self, vm, pin, level, line_status=False):
        """ioapic_set_irq: lowering clears the IRR bit (1); a raise of the RTC with
        pending EOIs (KVM_IRQ_LINE_STATUS only) and an edge already in IRR are coalesced
        (0); otherwise ioapic_service's result."""
        io = self.ioapic
        mask = 1 << pin
        if not level:
            io.irr &= ~mask
            return 1
        if pin == RTC_GSI and line_status and io.rtc_dest:
            return 0
        old = io.irr
        io.irr |= mask
        if not io.redirtbl[pin] & X.IOAPIC_REDIR_LEVEL:
            io.irr_delivered &= ~mask
            if old == io.irr:
                return 0
        return self.ioapic_service(vm, pin, line_status)

    def ioapic_service(self, vm, pin, line_status):
        """ioapic_service: a masked entry, or a level-triggered one waiting for its EOI
        (remote IRR), is -1; else the entry is delivered like an MSI (level 1) and its
        result returned; a non-zero result sets remote IRR of a level-triggered entry."""
        io = self.ioapic
        e = io.redirtbl[pin]
        level = bool(e & X.IOAPIC_REDIR_LEVEL)
        if e & X.IOAPIC_REDIR_MASK or (level and e & X.IOAPIC_REDIR_REMOTE_IRR):
            return -1
        mode = (e >> 8) & 7
        vector = e & 0xFF
        if not level:
            io.irr_delivered |= 1 << pin
        ret, accepted = deliver(vm, (e >> 56) & 0xFF, bool(e & X.IOAPIC_REDIR_DEST_LOGICAL),
                                mode, mode == APIC_DM_LOWEST)
        accepted_by(accepted, mode, vector, level)
        if pin == RTC_GSI and line_status:
            io.rtc_dest = {v: vector for v in accepted}
        if ret and level:
            io.redirtbl[pin] = e | X.IOAPIC_REDIR_REMOTE_IRR
        return ret

    def set_ioapic(self, vm, st):
        """kvm_set_ioapic: the state as given, IRR and irr_delivered cleared, then every
        pin of the given IRR raised again (kvm_ioapic_inject_all, as KVM_IRQ_LINE_STATUS
        would: unmasked entries are delivered), then the RTC's EOI tracking recomputed
        from the LAPICs (kvm_rtc_eoi_tracking_restore_all)."""
        io = self.ioapic
        io.base_address, io.ioregsel, io.id, io.pad = st.base_address, st.ioregsel, st.id, st.pad
        io.redirtbl = list(st.redirtbl)
        io.irr = io.irr_delivered = 0
        io.rtc_dest = {}
        for pin in range(IOAPIC_NUM_PINS):
            if st.irr & (1 << pin):
                self.ioapic_set_irq(vm, pin, 1, True)
        e = io.redirtbl[RTC_GSI]
        io.rtc_dest = {}
        for vcpu in list(vm.vcpus.values()):
            if _matches(vcpu, (e >> 56) & 0xFF, bool(e & X.IOAPIC_REDIR_DEST_LOGICAL)) \
                    and x86_lapic.pending_eoi(vcpu, e & 0xFF):
                io.rtc_dest[vcpu] = e & 0xFF


#: ``chips(vm)``: the IrqChips of ``vm`` (made on first use)
chips = Attached(lambda vm: IrqChips())


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


def deliver(vm, dest, logical, mode, lowest):
    """kvm_irq_delivery_to_apic for a message without shorthand (level 1): the number of
    LAPICs that accepted, or -1 when no present LAPIC matched on the slow path; and the
    vCPUs that accepted."""
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
        accepted = [v for v in targets if _accepts(vm, v, mode)]
        return len(accepted), accepted
    r = -1
    chosen = None
    accepted = []
    for vcpu in list(vm.vcpus.values()):
        if not x86_lapic.present(vcpu) or not _matches(vcpu, dest, logical):
            continue
        if not lowest:
            ok = _accepts(vm, vcpu, mode)
            r = max(r, 0) + ok
            if ok:
                accepted.append(vcpu)
        elif chosen is None and x86_lapic.enabled(vcpu):
            chosen = vcpu
    if chosen is not None:
        r = _accepts(vm, chosen, mode)
        accepted = [chosen] if r else []
    return r, accepted


def accepted_by(vcpus, mode, vector, level_triggered):
    """What __apic_accept_irq leaves in each LAPIC that accepted an asserted interrupt:
    fixed and lowest priority set IRR (and TMR: kmock.kvm.x86_lapic.accept_vector); an NMI
    is queued as KVM_NMI queues one (kvm_inject_nmi: KVM_GET_VCPU_EVENTS then shows
    nmi.pending; probed). INIT, SIPI, SMI and ExtINT change nothing kmock keeps [kmock]."""
    if mode in (APIC_DM_FIXED, APIC_DM_LOWEST):
        for v in vcpus:
            x86_lapic.accept_vector(v, vector, level_triggered)
    elif mode == APIC_DM_NMI:
        for v in vcpus:
            x86_state.queue_nmi(x86_state.state(v))


def deliver_msi(vm, address_lo, address_hi, data):
    """kvm_set_msi (level 1) -> kvm_irq_delivery_to_apic: the number of LAPICs that
    accepted, or -1 when no present LAPIC matched on the slow path."""
    dest = (address_lo >> 12) & 0xFF
    if x86_vm.state(vm).x2apic_api & x86_lapic.KVM_X2APIC_API_USE_32BIT_IDS:
        dest |= address_hi & 0xFFFFFF00
    mode = (data >> 8) & 7
    r, accepted = deliver(vm, dest, bool(address_lo & MSI_DEST_MODE_LOGICAL), mode,
                          mode == APIC_DM_LOWEST or bool(address_lo & MSI_REDIR_HINT))
    accepted_by(accepted, mode, data & 0xFF, bool(data & MSI_DATA_TRIGGER_LEVEL))
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


def set_irq(vm, gsi, level, line_status=False):
    """kvm_set_irq: every route of ``gsi`` (kmock.kvm.eventfds.routes), -1 when none
    gives a non-negative result, else the sum of those. ``line_status``: the caller is
    KVM_IRQ_LINE_STATUS (the RTC's coalescing is reported)."""
    c = chips(vm)
    with c.lock:
        c.user_levels[gsi] = level
        return _set_irq(vm, c, gsi, level, line_status)


def _set_irq(vm, c, gsi, level, line_status=False):
    """set_irq with ``c.lock`` held."""
    ret = -1
    for e in eventfds.routes(vm):
        if e.gsi != gsi:
            continue
        if e.type == eventfds.KVM_IRQ_ROUTING_IRQCHIP:
            chip, pin = e.fields
            if chip == eventfds.KVM_IRQCHIP_IOAPIC:
                r = c.ioapic_set_irq(vm, pin, level, line_status)
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


def pit_pulse(vm):
    """pit_do_work's kvm_set_irq(kvm, pit->irq_source_id, 0, 1) then (.., 0): GSI 0 raised
    and lowered by the PIT's own IRQ source. A line is the OR of its sources
    (__kvm_irq_line_state): while userspace holds GSI 0 high the lowering is one more raise
    (no new edge for the PIC; the I/O APIC's IRR is set again). Conformance x86_pit_tick."""
    c = chips(vm)
    with c.lock:
        _set_irq(vm, c, 0, 1)
        _set_irq(vm, c, 0, c.user_levels.get(0, 0))


def _irq_line(f, arg, status):
    vm = f.vm
    vm.check_caller()
    ev = copy_from_user(arg, K.kvm_irq_level)
    if not x86_vm.state(vm).irqchip_in_kernel:
        raise oserror(errno.ENXIO)
    ev.irq = set_irq(vm, ev.irq, ev.level, status) & 0xFFFFFFFF  # the union's s32 status
    if status:
        copy_to_user(arg, ev)
    return 0


def vm_irq_line(f, arg):
    """KVM_IRQ_LINE: the argument is read, nothing is written back."""
    return _irq_line(f, arg, False)


def vm_irq_line_status(f, arg):
    """KVM_IRQ_LINE_STATUS: the status is written over ``irq``."""
    return _irq_line(f, arg, True)


# --- KVM_GET_IRQCHIP / KVM_SET_IRQCHIP ----------------------------------------------------


def _irqchip_arg(f, arg):
    """kvm_arch_vm_ioctl: memdup_user of the whole struct (EFAULT), then ENXIO unless the
    irqchip is the full in-kernel one (none or split)."""
    vm = f.vm
    vm.check_caller()
    chip = copy_from_user(arg, X.kvm_irqchip)
    if x86_vm.state(vm).irqchip_mode != "kernel":
        raise oserror(errno.ENXIO)
    return vm, chip


def vm_get_irqchip(f, arg):
    """KVM_GET_IRQCHIP (kvm_vm_ioctl_get_irqchip): chip 0 / 1 the master / slave PIC's 16
    bytes, 2 the I/O APIC's state (IRR without the delivered edges); another id EINVAL.
    The rest of the struct is written back as it was read (the union's other bytes, pad)."""
    vm, chip = _irqchip_arg(f, arg)
    c = chips(vm)
    with c.lock:
        if chip.chip_id in (K.KVM_IRQCHIP_PIC_MASTER, K.KVM_IRQCHIP_PIC_SLAVE):
            chip.chip.pic = c.pics[chip.chip_id].state()
        elif chip.chip_id == K.KVM_IRQCHIP_IOAPIC:
            chip.chip.ioapic = c.ioapic.state()
        else:
            raise oserror(errno.EINVAL)
    copy_to_user(arg, chip)
    return 0


def vm_set_irqchip(f, arg):
    """KVM_SET_IRQCHIP (kvm_vm_ioctl_set_irqchip): a PIC's 16 bytes as given (no field
    checked), or the I/O APIC's state (kvm_set_ioapic: the IRR given is raised again);
    another id EINVAL. kvm_pic_update_irq runs in every case, the EINVAL one included
    (it changes nothing there: the PICs were already up to date)."""
    vm, chip = _irqchip_arg(f, arg)
    c = chips(vm)
    with c.lock:
        r = 0
        if chip.chip_id in (K.KVM_IRQCHIP_PIC_MASTER, K.KVM_IRQCHIP_PIC_SLAVE):
            c.pics[chip.chip_id].load(chip.chip.pic)
        elif chip.chip_id == K.KVM_IRQCHIP_IOAPIC:
            c.set_ioapic(vm, chip.chip.ioapic)
        else:
            r = errno.EINVAL
        c.pic_update_irq()
    if r:
        raise oserror(r)
    return 0
