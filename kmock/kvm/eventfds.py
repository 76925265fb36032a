"""KVM_IOEVENTFD, KVM_IRQFD and KVM_SET_GSI_ROUTING: the VM's eventfd bindings and its
GSI routing table (generic; the architecture's part is an :class:`IrqchipModel`).

Sources, Linux 6.18: virt/kvm/eventfd.c (kvm_ioeventfd, kvm_assign_ioeventfd,
kvm_assign_ioeventfd_idx, kvm_deassign_ioeventfd_idx, ioeventfd_check_collision,
ioeventfd_in_range, kvm_irqfd, kvm_irqfd_assign, kvm_irqfd_deassign),
virt/kvm/kvm_main.c (kvm_vm_ioctl KVM_SET_GSI_ROUTING), virt/kvm/irqchip.c
(kvm_set_irq_routing, setup_routing_entry) and arch/x86/kvm/irq.c
(kvm_arch_irqfd_allowed, kvm_arch_can_set_irq_routing, kvm_set_routing_entry,
kvm_msi_route_invalid). Check order and errno were confirmed on a 6.18.44 host by the
conformance scenarios ``eventfds_*`` (kmock.testing.conformance_eventfds).

What is modelled (docs/eventfds.md):

* an ioeventfd is on the in-kernel io bus: a scripted guest's ``outb`` or MMIO write
  fragment that matches one (ioeventfd_in_range: same address; length 0, or the same
  length and, with DATAMATCH, the same value) signals the eventfd (adds 1) and
  completes without an exit; anything else still exits to userspace;
* an irqfd is bookkeeping: the binding (eventfd, gsi, resamplefd). No interrupt reaches
  the scripted guest. The kernel reads the counter at each signal after KVM_IRQFD
  (irqfd_wakeup, in the writer's context), but leaves a count pending at KVM_IRQFD
  (probed); kmock reads it only when a test calls :func:`signalled_irqfds`;
* the routing table is validated and kept (it replaces the previous one);
  KVM_CREATE_IRQCHIP's default routing is represented by ``routes is None``.

The code here is virt/kvm's, for every architecture; what the kernel leaves to the
architecture (kvm_arch_intc_initialized, kvm_arch_irqfd_allowed,
kvm_arch_can_set_irq_routing, kvm_set_routing_entry, the default routing, the injection)
is an :class:`IrqchipModel`: x86's is :class:`X86Irqchip` (arch/x86/kvm/irq.c); another
architecture's VM type names its own as ``irqchip_model`` (kmock_arm64: the vGIC's,
arch/arm64/kvm/vgic/vgic-irqfd.c). A model whose ``delivers`` is true gets the irqfds'
signals as injections (:func:`deliver_irqfds`); x86's stays bookkeeping.

An eventfd is named by a real fd of this process (the native tier's server substitutes
its own copy of the VMM's fd). The kernel holds a reference on the eventfd context: a
binding keeps a duplicate of the fd until it is deassigned or the VM goes away. Two fds
name the same eventfd when their ``eventfd-id`` (/proc/self/fdinfo) is equal.
"""

import ctypes
import errno
import fcntl
import os
import select
import threading
import weakref

from ..errors import oserror
from ..kernel_util import copy_from_user, read_user_at
from . import x86_vm
from .attached import Attached

# --- UAPI: include/uapi/linux/kvm.h, in kmock.uapi.kvm --------------------------------------

from ..uapi.kvm import (  # noqa: E402
    KVM_IOEVENTFD, KVM_IOEVENTFD_FLAG_DATAMATCH, KVM_IOEVENTFD_FLAG_DEASSIGN,
    KVM_IOEVENTFD_FLAG_PIO, KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY,
    KVM_IOEVENTFD_VALID_FLAG_MASK, KVM_IRQ_ROUTING_HV_SINT, KVM_IRQ_ROUTING_IRQCHIP,
    KVM_IRQ_ROUTING_MSI, KVM_IRQ_ROUTING_XEN_EVTCHN,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQFD,
    KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE, KVM_MAX_IRQ_ROUTES, KVM_MSI_VALID_DEVID,
    KVM_SET_GSI_ROUTING, kvm_ioeventfd, kvm_irq_routing, kvm_irq_routing_entry,
    kvm_irqfd)
PIC_NUM_PINS = 16
KVM_IOAPIC_NUM_PINS = 24
#: KVM_X2APIC_API_USE_32BIT_IDS: kvm->arch.x2apic_format
X2APIC_API_USE_32BIT_IDS = 1 << 0
#: kvm_xen_setup_evtchn: max_evtchn_port() of a VM not in Xen long mode
#: (COMPAT_EVTCHN_2L_NR_CHANNELS); only 2-level event channels (priority 0)
XEN_COMPAT_EVTCHN_2L_NR_CHANNELS = 1024
KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL = 0

#: KVM_CHECK_EXTENSION capabilities that say whether the kernel was built with
#: CONFIG_KVM_HYPERV / CONFIG_KVM_XEN: without them kvm_set_routing_entry has no
#: HV_SINT / XEN_EVTCHN case (EINVAL; the 6.18.44 probe host has neither)
KVM_CAP_HYPERV_SYNIC = 123
KVM_CAP_XEN_HVM = 157

#: bus indexes (enum kvm_bus)
MMIO_BUS, PIO_BUS, VIRTIO_CCW_NOTIFY_BUS, FAST_MMIO_BUS = "mmio", "pio", "ccw", "fast_mmio"


# --- eventfds ----------------------------------------------------------------------------

def _ref_fd_base():
    """Where the duplicates kmock holds are numbered from: high, so that they do not
    take the lowest free numbers the VMM's next open() would get (the kernel's
    reference is no fd at all)."""
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY or soft > 65536:
        soft = 65536
    return max(3, soft // 2)


_REF_FD_BASE = _ref_fd_base()


class EventfdRef:
    """A reference on an eventfd context (eventfd_ctx_fdget): a duplicate fd of ours and
    the context's id. ``put`` closes the duplicate."""

    __slots__ = ("fd", "id")

    def __init__(self, fd, ctx_id):
        self.fd = fd
        self.id = ctx_id

    def signal(self):
        """eventfd_signal: add 1 to the counter."""
        os.eventfd_write(self.fd, 1)

    def consume(self):
        """eventfd_ctx_do_read as irqfd_wakeup does it: take the whole counter; returns it
        (0: nothing was pending). Never blocks (the VMM may have made the eventfd
        blocking; the open file's O_NONBLOCK is not touched)."""
        p = select.poll()  # (select() stops at FD_SETSIZE; these fds are numbered high)
        p.register(self.fd, select.POLLIN)
        if not p.poll(0):
            return 0
        try:
            return os.eventfd_read(self.fd)
        except BlockingIOError:
            return 0

    def pending(self):
        """Whether the counter is non-zero (EPOLLIN), without reading it."""
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return bool(p.poll(0))

    def put(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __eq__(self, other):
        return isinstance(other, EventfdRef) and other.id == self.id

    __hash__ = None

    def __repr__(self):
        return f"<eventfd id {self.id}>"


def eventfd_ctx_fdget(kernel, fd):
    """The eventfd behind ``fd`` (this process's fd): not an open fd -> EBADF; an open
    file that is not an eventfd (a kmock fd included) -> EINVAL. The duplicate is taken
    first and inspected, so a concurrent close or reuse of ``fd`` cannot mix two files."""
    if fd < 0 or fd > 0x7FFFFFFF:
        raise oserror(errno.EBADF)
    if kernel.fdtable.get(fd) is not None:
        raise oserror(errno.EINVAL)  # a kmock file (/dev/kvm, a VM...): not an eventfd
    try:
        dup = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _REF_FD_BASE)
    except OSError:
        raise oserror(errno.EBADF) from None
    try:
        ctx_id = _eventfd_id(dup)
    except BaseException:
        os.close(dup)
        raise
    return EventfdRef(dup, ctx_id)


def _eventfd_id(fd):
    """The eventfd context id of ``fd`` (``eventfd-id`` in fdinfo); EINVAL if ``fd`` is not
    an eventfd."""
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]":
            raise oserror(errno.EINVAL)
        with open(f"/proc/self/fdinfo/{fd}") as info:
            for line in info:
                if line.startswith("eventfd-id:"):
                    return int(line.split()[1])
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise
        raise oserror(errno.EBADF) from None
    # a kernel without eventfd-id (before 6.1): every eventfd shares one anonymous inode,
    # so only the fd itself names it
    return ("fd", fd)


# --- per-VM state --------------------------------------------------------------------------

class Ioeventfd:
    """struct _ioeventfd."""

    __slots__ = ("addr", "bus", "datamatch", "eventfd", "length", "wildcard")

    def __init__(self, bus, addr, length, datamatch, wildcard, eventfd):
        self.bus = bus
        self.addr = addr
        self.length = length
        self.datamatch = datamatch
        self.wildcard = wildcard
        self.eventfd = eventfd

    def in_range(self, addr, length, value):
        """ioeventfd_in_range: the same address; length 0 matches any access, else the
        lengths must be equal and, with DATAMATCH, the value too (compared as a u64)."""
        if addr != self.addr:
            return False
        if not self.length:
            return True
        if length != self.length:
            return False
        return self.wildcard or value == self.datamatch

    def __repr__(self):
        dm = "" if self.wildcard else f" datamatch {self.datamatch:#x}"
        return f"<ioeventfd {self.bus} {self.addr:#x}+{self.length}{dm} {self.eventfd!r}>"


class Irqfd:
    """struct kvm_kernel_irqfd: the bookkeeping part."""

    __slots__ = ("eventfd", "gsi", "resamplefd", "vm")

    def __init__(self, eventfd, gsi, resamplefd, vm):
        self.eventfd = eventfd
        self.gsi = gsi
        self.resamplefd = resamplefd
        #: a weak reference to the VM (kvm_irqfd_release unbinds at the VM's end)
        self.vm = weakref.ref(vm)

    def alive(self):
        vm = self.vm()
        return vm is not None and not vm.destroyed

    def __repr__(self):
        r = f" resample {self.resamplefd!r}" if self.resamplefd else ""
        return f"<irqfd gsi {self.gsi} {self.eventfd!r}{r}>"


class EventfdState:
    """kvm->ioeventfds, kvm->irqfds.items and kvm->irq_routing of one VM."""

    def __init__(self):
        self.lock = threading.RLock()  # kvm->slots_lock / irqfds.lock / irq_lock
        #: registered ioeventfds, in registration order (kvm->ioeventfds)
        self.ioeventfds = []
        #: PIO and MMIO ioeventfds by address, for the guest's look-up
        self.by_addr = {}
        self.irqfds = []
        #: the last KVM_SET_GSI_ROUTING table, a tuple of RoutingEntry; None while the
        #: irqchip's own default applies (see :func:`routes`)
        self.routing = None

    def release(self):
        for p in self.ioeventfds:
            p.eventfd.put()
        for irqfd in self.irqfds:
            _shutdown(irqfd)
        self.ioeventfds = []
        self.by_addr = {}
        self.irqfds = []


def _new_state(vm):
    s = EventfdState()
    weakref.finalize(vm, s.release)  # its eventfd references go with the VM object
    return s


#: vm -> its EventfdState (an Attached, not a WeakKeyDictionary: deliver_irqfds looks a
#: VM up on every KVM_RUN of a delivering irqchip model, arm64's)
_STATES = Attached(_new_state)
_WAITERS_LOCK = threading.RLock()
#: eventfd id -> the Irqfd bound to it, over every VM of this process: an irqfd is the
#: eventfd wait queue's exclusive priority waiter (add_wait_queue_priority_exclusive in
#: kvm_irqfd_register, 6.18), so a second irqfd on one eventfd is EBUSY even from another
#: VM (probed)
_IRQFD_WAITERS = {}


def state(vm):
    """The EventfdState of ``vm`` (made on first use; its eventfd references are dropped
    when the VM object goes away)."""
    return _STATES(vm)


def _drop_waiter(irqfd):
    with _WAITERS_LOCK:
        if _IRQFD_WAITERS.get(irqfd.eventfd.id) is irqfd:
            del _IRQFD_WAITERS[irqfd.eventfd.id]


# --- KVM_IOEVENTFD -------------------------------------------------------------------------

def _bus_from_flags(flags):
    """ioeventfd_bus_from_flags: PIO first, then VIRTIO_CCW_NOTIFY, else MMIO."""
    if flags & KVM_IOEVENTFD_FLAG_PIO:
        return PIO_BUS
    if flags & KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY:
        return VIRTIO_CCW_NOTIFY_BUS
    return MMIO_BUS


def _collides(s, p):
    """ioeventfd_check_collision: same bus and address, and either length 0, or the same
    length with a wildcard or the same datamatch (the eventfd does not matter)."""
    for q in s.ioeventfds:
        if (q.bus == p.bus and q.addr == p.addr
                and (not q.length or not p.length
                     or (q.length == p.length
                         and (q.wildcard or p.wildcard or q.datamatch == p.datamatch)))):
            return True
    return False


def assign_ioeventfd(vm, args):
    """kvm_assign_ioeventfd: length in {0, 1, 2, 4, 8}, no address overflow, known flags,
    no DATAMATCH with length 0 (each EINVAL, in that order); then the eventfd (EBADF,
    EINVAL); a registration that collides -> EEXIST. A length-0 MMIO ioeventfd is also
    on the fast MMIO bus (one entry here: the look-up is the same)."""
    length, addr, flags = args.len, args.addr, args.flags
    if length not in (0, 1, 2, 4, 8):
        raise oserror(errno.EINVAL)
    if addr + length >= 1 << 64:
        raise oserror(errno.EINVAL)  # 'addr + len < addr': the u64 sum wraps
    if flags & ~KVM_IOEVENTFD_VALID_FLAG_MASK:
        raise oserror(errno.EINVAL)
    datamatch = bool(flags & KVM_IOEVENTFD_FLAG_DATAMATCH)
    if not length and datamatch:
        raise oserror(errno.EINVAL)
    eventfd = eventfd_ctx_fdget(vm.kernel, args.fd)
    p = Ioeventfd(_bus_from_flags(flags), addr, length, args.datamatch if datamatch else 0,
                  not datamatch, eventfd)
    s = state(vm)
    with s.lock:
        if _collides(s, p):
            eventfd.put()
            raise oserror(errno.EEXIST)
        s.ioeventfds.append(p)
        s.by_addr.setdefault((p.bus, addr), []).append(p)
    return 0


def deassign_ioeventfd(vm, args):
    """kvm_deassign_ioeventfd_idx: no flag or length checks; the eventfd first (EBADF,
    EINVAL), then the entry with the same bus, eventfd, address, length and kind
    (wildcard, or DATAMATCH with the same value); none -> ENOENT."""
    bus = _bus_from_flags(args.flags)
    eventfd = eventfd_ctx_fdget(vm.kernel, args.fd)
    try:
        wildcard = not args.flags & KVM_IOEVENTFD_FLAG_DATAMATCH
        s = state(vm)
        with s.lock:
            for p in s.ioeventfds:
                if (p.bus != bus or p.eventfd != eventfd or p.addr != args.addr
                        or p.length != args.len or p.wildcard != wildcard):
                    continue
                if not p.wildcard and p.datamatch != args.datamatch:
                    continue
                s.ioeventfds.remove(p)
                same = s.by_addr[(bus, p.addr)]
                same.remove(p)
                if not same:
                    del s.by_addr[(bus, p.addr)]
                p.eventfd.put()
                return 0
        raise oserror(errno.ENOENT)
    finally:
        eventfd.put()


def vm_ioeventfd(f, arg):
    """KVM_IOEVENTFD (kvm_ioeventfd): DEASSIGN picks the path before any other check."""
    vm = f.vm
    vm.check_caller()
    args = copy_from_user(arg, kvm_ioeventfd)
    if args.flags & KVM_IOEVENTFD_FLAG_DEASSIGN:
        return deassign_ioeventfd(vm, args)
    return assign_ioeventfd(vm, args)


def io_bus_write(vm, bus, addr, data):
    """kvm_io_bus_write for a guest write of ``data`` (bytes) at ``addr`` on ``bus``
    ("pio" or "mmio"): True when an ioeventfd took it (its eventfd was signalled and the
    access does not exit). Cheap when the VM has no ioeventfd."""
    s = _STATES.get(vm)
    if s is None or not s.by_addr:
        return False
    with s.lock:
        cands = s.by_addr.get((bus, addr))
        if not cands:
            return False
        value = int.from_bytes(data, "little")
        for p in cands:
            if p.in_range(addr, len(data), value):
                p.eventfd.signal()
                return True
    return False


def ioeventfds(vm):
    """The VM's ioeventfds (a list copy), for tests."""
    s = _STATES.get(vm)
    return list(s.ioeventfds) if s else []


# --- KVM_IRQFD -----------------------------------------------------------------------------

def irqfd_allowed(vm, flags):
    """kvm_arch_irqfd_allowed of the VM's architecture (:class:`IrqchipModel`)."""
    return irqchip_model(vm).irqfd_allowed(vm, flags)


def assign_irqfd(vm, args):
    """kvm_irqfd_assign: the irqchip not initialised (kvm_arch_intc_initialized) ->
    EAGAIN; not allowed -> EINVAL; the fd (EBADF), an eventfd (EINVAL); with RESAMPLE the
    resamplefd likewise; an eventfd already bound to an irqfd (of any VM, whatever the
    gsi) -> EBUSY. A count pending in the eventfd stays (the kernel's initial poll
    schedules an injection without reading the counter; probed): a delivering model
    injects once for it here, and reads the counter only at the next delivery."""
    model = irqchip_model(vm)
    if not model.intc_initialized(vm):
        raise oserror(errno.EAGAIN)
    if not model.irqfd_allowed(vm, args.flags):
        raise oserror(errno.EINVAL)
    kernel = vm.kernel
    eventfd = eventfd_ctx_fdget(kernel, args.fd)
    resamplefd = None
    try:
        if args.flags & KVM_IRQFD_FLAG_RESAMPLE:
            resamplefd = eventfd_ctx_fdget(kernel, args.resamplefd)
        s = state(vm)
        with s.lock:
            with _WAITERS_LOCK:
                waiter = _IRQFD_WAITERS.get(eventfd.id)
                if waiter is not None and waiter.alive():
                    raise oserror(errno.EBUSY)
                irqfd = _IRQFD_WAITERS[eventfd.id] = Irqfd(eventfd, args.gsi, resamplefd, vm)
            s.irqfds.append(irqfd)
    except BaseException:
        eventfd.put()
        if resamplefd is not None:
            resamplefd.put()
        raise
    if model.delivers and eventfd.pending():
        model.irqfd_inject(vm, irqfd, initial=True)  # vfs_poll: EPOLLIN -> schedule_work
    return 0


def deassign_irqfd(vm, args):
    """kvm_irqfd_deassign: the eventfd (EBADF, EINVAL), then every irqfd with this eventfd
    and gsi goes; none is not an error."""
    eventfd = eventfd_ctx_fdget(vm.kernel, args.fd)
    try:
        s = state(vm)
        with s.lock:
            keep = []
            for i in s.irqfds:
                if i.eventfd == eventfd and i.gsi == args.gsi:
                    _shutdown(i)
                else:
                    keep.append(i)
            s.irqfds = keep
    finally:
        eventfd.put()
    return 0


def _shutdown(irqfd):
    """irqfd_shutdown: off the eventfd's wait queue, its references dropped."""
    _drop_waiter(irqfd)
    irqfd.eventfd.put()
    if irqfd.resamplefd is not None:
        irqfd.resamplefd.put()


def vm_destroyed(vm):
    """kvm_destroy_vm: the buses' ioeventfds (and any irqfd left) drop their eventfds now,
    not when the VM object is collected."""
    s = _STATES.get(vm)
    if s is not None:
        with s.lock:
            s.release()


def irqfd_release(vm):
    """kvm_irqfd_release, from kvm_vm_release: the VM fd's last close shuts down every
    irqfd of the VM, even while vCPU fds keep the VM itself (conformance
    ``eventfds_irqfd_vm_release``). Ioeventfds stay until the VM is destroyed."""
    s = _STATES.get(vm)
    if s is None:
        return
    with s.lock:
        irqfds, s.irqfds = s.irqfds, []
    for i in irqfds:
        _shutdown(i)


def signalled_irqfds(vm):
    """What irqfd_wakeup would have injected since the last call: reads the counter of
    every irqfd of ``vm`` that was signalled (as the kernel does at the signal) and
    returns their gsis, in binding order. The kernel reads at once, from the writer's
    eventfd_write; kmock reads only here (a test's look at "the interrupts raised").
    With a delivering model (arm64) this is :func:`deliver_irqfds`: the gsis are injected."""
    if irqchip_model(vm).delivers:
        return deliver_irqfds(vm)
    s = _STATES.get(vm)
    if s is None:
        return []
    out = []
    with s.lock:
        for i in s.irqfds:
            if i.eventfd.consume():
                out.append(i.gsi)
    return out


def deliver_irqfds(vm):
    """irqfd_wakeup for a delivering model (``IrqchipModel.delivers``): every irqfd of
    ``vm`` whose eventfd was signalled has its counter read and its gsi injected
    (:meth:`IrqchipModel.irqfd_inject`). The kernel does it at the eventfd_write; kmock
    at its delivery points: each KVM_RUN of the VM's vCPUs before the guest runs (the
    guest can see no interrupt earlier), and :func:`signalled_irqfds`. Returns the gsis
    injected, in binding order. A model that does not deliver (x86) is left alone."""
    s = _STATES.get(vm)
    if s is None or not s.irqfds:
        return []  # (looked at first: the common case, and cheaper than the model's look-up)
    model = irqchip_model(vm)
    if not model.delivers:
        return []
    with s.lock:
        fired = [i for i in s.irqfds if i.eventfd.consume()]
    # injected outside the lock: the irqchip's own lock is taken first where the irqchip
    # installs a routing table (arm64 vgic_init under the vGIC's lock)
    for i in fired:
        model.irqfd_inject(vm, i)
    return [i.gsi for i in fired]


def vm_irqfd(f, arg):
    """KVM_IRQFD (kvm_irqfd): flags beyond DEASSIGN | RESAMPLE -> EINVAL, then the path."""
    vm = f.vm
    vm.check_caller()
    args = copy_from_user(arg, kvm_irqfd)
    if args.flags & ~(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE):
        raise oserror(errno.EINVAL)
    if args.flags & KVM_IRQFD_FLAG_DEASSIGN:
        return deassign_irqfd(vm, args)
    return assign_irqfd(vm, args)


def irqfds(vm):
    """The VM's irqfds (a list copy), for tests."""
    s = _STATES.get(vm)
    return list(s.irqfds) if s else []


# --- KVM_SET_GSI_ROUTING --------------------------------------------------------------------

class RoutingEntry(tuple):
    """(gsi, type, flags, fields): one kept routing entry; ``fields`` is a tuple of the
    type's values (irqchip: (chip, pin); msi: (address_lo, address_hi, data, devid);
    hv_sint: (vcpu, sint); xen_evtchn: (port, vcpu, priority))."""

    __slots__ = ()

    gsi = property(lambda self: self[0])
    type = property(lambda self: self[1])
    flags = property(lambda self: self[2])
    fields = property(lambda self: self[3])


def set_irq_routing(vm, entries):
    """kvm_set_irq_routing: every gsi < KVM_MAX_IRQ_ROUTES first; then per entry: flags
    (MSI: only KVM_MSI_VALID_DEVID; others: none), one route per gsi except irqchip
    routes to different chips (setup_routing_entry), the type's own checks. All or
    nothing: the new table replaces the old one only when every entry is valid."""
    for ue in entries:
        if ue.gsi >= KVM_MAX_IRQ_ROUTES:
            raise oserror(errno.EINVAL)
    model = irqchip_model(vm)
    table = []
    by_gsi = {}
    for ue in entries:
        if ue.type == KVM_IRQ_ROUTING_MSI:
            if ue.flags & ~KVM_MSI_VALID_DEVID:
                raise oserror(errno.EINVAL)
        elif ue.flags:
            raise oserror(errno.EINVAL)
        for e in by_gsi.get(ue.gsi, ()):
            if (e.type != KVM_IRQ_ROUTING_IRQCHIP or ue.type != KVM_IRQ_ROUTING_IRQCHIP
                    or ue.u.irqchip.irqchip == e.fields[0]):
                raise oserror(errno.EINVAL)
        e = RoutingEntry((ue.gsi, ue.type, ue.flags, model.routing_entry(vm, ue)))
        by_gsi.setdefault(ue.gsi, []).append(e)
        table.append(e)
    s = state(vm)
    with s.lock:
        s.routing = tuple(table)
    return 0


def vm_set_gsi_routing(f, arg):
    """kvm_vm_ioctl KVM_SET_GSI_ROUTING: the header (EFAULT); kvm_arch_can_set_irq_routing
    false (x86: no in-kernel irqchip), nr > KVM_MAX_IRQ_ROUTES, flags != 0: EINVAL; then the
    entries are read (EFAULT) and set."""
    vm = f.vm
    vm.check_caller()
    head = copy_from_user(arg, kvm_irq_routing)
    if not irqchip_model(vm).can_set_irq_routing(vm):
        raise oserror(errno.EINVAL)
    if head.nr > KVM_MAX_IRQ_ROUTES or head.flags:
        raise oserror(errno.EINVAL)
    size = ctypes.sizeof(kvm_irq_routing_entry)
    entries = []
    if head.nr:
        raw = read_user_at(arg, ctypes.sizeof(kvm_irq_routing), head.nr * size)
        entries = [kvm_irq_routing_entry.from_buffer_copy(raw, i * size) for i in range(head.nr)]
    return set_irq_routing(vm, entries)


def routes(vm):
    """The VM's routing table as a tuple of RoutingEntry: the last KVM_SET_GSI_ROUTING,
    else the irqchip's default (:meth:`IrqchipModel.default_routes`)."""
    s = _STATES.get(vm)
    if s is not None and s.routing is not None:
        return s.routing
    return irqchip_model(vm).default_routes(vm)


def install_routing(vm, table):
    """kvm_set_irq_routing from inside the kernel: ``table`` (RoutingEntry tuples, already
    valid) replaces the routing, whatever KVM_SET_GSI_ROUTING set (arm64 vgic_init:
    kvm_vgic_setup_default_irq_routing)."""
    s = state(vm)
    with s.lock:
        s.routing = tuple(table)


# --- the architecture's part ------------------------------------------------------------------

class IrqchipModel:
    """What virt/kvm leaves to the architecture, with the kernel's __weak defaults."""

    #: irqfd signals are injected (:func:`deliver_irqfds`); False: bookkeeping only
    delivers = False

    def intc_initialized(self, vm):
        """kvm_arch_intc_initialized (__weak: true): false -> KVM_IRQFD EAGAIN."""
        return True

    def irqfd_allowed(self, vm, flags):
        """kvm_arch_irqfd_allowed (__weak: true)."""
        return True

    def can_set_irq_routing(self, vm):
        """kvm_arch_can_set_irq_routing (__weak: true)."""
        return True

    def routing_entry(self, vm, ue):
        """kvm_set_routing_entry: the entry's kept fields, or OSError."""
        raise oserror(errno.EINVAL)

    def default_routes(self, vm):
        """The routing in force before any KVM_SET_GSI_ROUTING."""
        return ()

    def irqfd_inject(self, vm, irqfd, initial=False):
        """irqfd_wakeup / irqfd_inject for a signal of ``irqfd`` (``initial``: the one
        kvm_irqfd_assign schedules for a count already pending)."""


class X86Irqchip(IrqchipModel):
    """arch/x86/kvm/irq.c and irq_comm.c: the PIC / I/O APIC / LAPIC of kmock.kvm.x86_vm."""

    def irqfd_allowed(self, vm, flags):
        """kvm_arch_irqfd_allowed (x86): RESAMPLE needs the full in-kernel irqchip, any
        other irqfd an in-kernel LAPIC (full or split irqchip)."""
        mode = x86_vm.state(vm).irqchip_mode
        if flags & KVM_IRQFD_FLAG_RESAMPLE:
            return mode == "kernel"
        return mode != "none"

    def can_set_irq_routing(self, vm):
        return x86_vm.state(vm).irqchip_in_kernel

    def routing_entry(self, vm, ue):
        """kvm_set_routing_entry (x86) after the flags check of kvm_set_irq_routing."""
        t = ue.type
        if t == KVM_IRQ_ROUTING_IRQCHIP:
            if x86_vm.state(vm).irqchip_mode == "split":
                raise oserror(errno.EINVAL)
            chip, pin = ue.u.irqchip.irqchip, ue.u.irqchip.pin
            if chip in (KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE):
                if pin >= PIC_NUM_PINS // 2:
                    raise oserror(errno.EINVAL)
            elif chip == KVM_IRQCHIP_IOAPIC:
                if pin >= KVM_IOAPIC_NUM_PINS:
                    raise oserror(errno.EINVAL)
            else:
                raise oserror(errno.EINVAL)
            return (chip, pin)
        if t == KVM_IRQ_ROUTING_MSI:
            m = ue.u.msi
            # kvm_msi_route_invalid: with 32-bit x2APIC ids, address_hi bits 7:0 must be 0
            if x86_vm.state(vm).x2apic_api & X2APIC_API_USE_32BIT_IDS and m.address_hi & 0xFF:
                raise oserror(errno.EINVAL)
            return (m.address_lo, m.address_hi, m.data, m.devid)
        if t == KVM_IRQ_ROUTING_HV_SINT and vm.caps.get(KVM_CAP_HYPERV_SYNIC):
            return (ue.u.hv_sint.vcpu, ue.u.hv_sint.sint)
        if t == KVM_IRQ_ROUTING_XEN_EVTCHN and vm.caps.get(KVM_CAP_XEN_HVM):
            x = ue.u.xen_evtchn
            if x.port >= XEN_COMPAT_EVTCHN_2L_NR_CHANNELS:
                raise oserror(errno.EINVAL)
            if x.priority != KVM_IRQ_ROUTING_XEN_EVTCHN_PRIO_2LEVEL:
                raise oserror(errno.EINVAL)
            return (x.port, x.vcpu, x.priority)
        raise oserror(errno.EINVAL)  # S390_ADAPTER and unknown types

    def default_routes(self, vm):
        """kvm_setup_default_irq_routing: GSIs 0-15 to the PIC and 0-23 to the I/O APIC,
        with KVM_CREATE_IRQCHIP; none with a split irqchip or no irqchip."""
        if x86_vm.state(vm).irqchip_mode != "kernel":
            return ()
        out = []
        for gsi in range(KVM_IOAPIC_NUM_PINS):
            if gsi < PIC_NUM_PINS:
                chip = KVM_IRQCHIP_PIC_MASTER if gsi < 8 else KVM_IRQCHIP_PIC_SLAVE
                out.append(RoutingEntry((gsi, KVM_IRQ_ROUTING_IRQCHIP, 0, (chip, gsi % 8))))
            out.append(RoutingEntry((gsi, KVM_IRQ_ROUTING_IRQCHIP, 0,
                                     (KVM_IRQCHIP_IOAPIC, gsi))))
        return tuple(out)


X86_IRQCHIP = X86Irqchip()
GENERIC_IRQCHIP = IrqchipModel()


def irqchip_model(vm):
    """The VM type's ``irqchip_model``; else x86's on x86 profiles, the __weak defaults
    elsewhere."""
    m = vm.vmtype.irqchip_model
    if m is not None:
        return m
    return X86_IRQCHIP if vm.kernel.profile.arch == "x86" else GENERIC_IRQCHIP


def eventfd_vm_ioctls():
    """The entries of the VM ioctl table (generic kvm_vm_ioctl: every architecture)."""
    return {
        KVM_IOEVENTFD: vm_ioeventfd,
        KVM_IRQFD: vm_irqfd,
        KVM_SET_GSI_ROUTING: vm_set_gsi_routing,
    }
