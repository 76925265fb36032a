"""KVM_IOEVENTFD, KVM_IRQFD, KVM_SET_GSI_ROUTING (kmock.kvm.eventfds) on profile linux-6.18.

The errno and check order were confirmed on a 6.18.44 host (conformance scenarios
eventfds_*); these tests pin what the host scenarios cannot show: a scripted guest's
write that an ioeventfd takes, the bookkeeping of irqfds and of the routing table, and
a hypothesis model of ioeventfd registration.
"""

import ctypes
import errno
import os
import select

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import kmock
from kmock.kvm import eventfds as E
from kmock.uapi import kvm as U
from kmock.kvm import x86_vm as X
from kmock.uapi import kvm as K

from ._guest import GuestVM
from ._util import create_vm, err, errno_or_0

PIO, DM, DEASSIGN = U.KVM_IOEVENTFD_FLAG_PIO, U.KVM_IOEVENTFD_FLAG_DATAMATCH, U.KVM_IOEVENTFD_FLAG_DEASSIGN


@pytest.fixture
def efds():
    made = []

    def make():
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        made.append(fd)
        return fd

    yield make
    for fd in made:
        try:
            os.close(fd)
        except OSError:
            pass


def count(fd):
    """Read (and reset) the eventfd's counter; 0 if nothing was signalled."""
    if not select.select([fd], [], [], 0)[0]:
        return 0
    return os.eventfd_read(fd)


def ioeventfd(k, vm, fd, addr, length, flags=0, datamatch=0):
    return k.ioctl(vm, U.KVM_IOEVENTFD,
                   U.kvm_ioeventfd(datamatch=datamatch, addr=addr, len=length, fd=fd, flags=flags))


def irqfd(k, vm, fd, gsi, flags=0, resamplefd=0):
    return k.ioctl(vm, U.KVM_IRQFD, U.kvm_irqfd(fd=fd, gsi=gsi, flags=flags, resamplefd=resamplefd))


def routing(k, vm, entries, flags=0):
    size = ctypes.sizeof(U.kvm_irq_routing_entry)
    buf = bytearray(8 + size * max(len(entries), 1))
    buf[:8] = U.kvm_irq_routing(nr=len(entries), flags=flags)
    for i, (gsi, typ, *u) in enumerate(entries):
        e = U.kvm_irq_routing_entry(gsi=gsi, type=typ)
        for j, v in enumerate(u):
            e.u.pad[j] = v
        buf[8 + i * size:8 + (i + 1) * size] = bytes(e)
    return k.ioctl(vm, U.KVM_SET_GSI_ROUTING, buf)


# --- ioeventfd: the guest's writes -------------------------------------------------------------


def test_outb_to_an_ioeventfd_port_signals_instead_of_exiting(k, efds):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    efd = efds()
    assert ioeventfd(k, g.fd, efd, 0x1000, 1, PIO) == 0
    s = g.guest()
    taken = s.outb(0x1000, 0x5A)
    other = s.outb(0x1001, 7)
    assert g.run() == (0, K.KVM_EXIT_IO)
    assert taken.done and taken.exits == []
    assert g.views[0].io()["port"] == 0x1001  # the unmatched port exits as before
    assert count(efd) == 1
    assert other.exits == [K.KVM_EXIT_IO]


def test_inb_of_an_ioeventfd_port_still_exits(k, efds):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    efd = efds()
    ioeventfd(k, g.fd, efd, 0x1000, 0, PIO)
    g.guest().inb(0x1000)
    assert g.run() == (0, K.KVM_EXIT_IO)  # an ioeventfd has no read side
    assert count(efd) == 0


def test_datamatch_and_length_select_the_write(k, efds):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    a, b = efds(), efds()
    ioeventfd(k, g.fd, a, 0x1000, 1, PIO | DM, 3)
    ioeventfd(k, g.fd, b, 0x1000, 2, PIO)  # outb is 1 byte: never matches length 2
    s = g.guest()
    s.outb(0x1000, 3)
    s.outb(0x1000, 4)
    assert g.run() == (0, K.KVM_EXIT_IO)
    assert g.views[0].io()["port"] == 0x1000
    assert (count(a), count(b)) == (1, 0)


def test_mmio_write_fragments_signal_and_reads_exit(k, efds):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    any_len, four = efds(), efds()
    ioeventfd(k, g.fd, any_len, 0xD0000000, 0)  # length 0: any write at the address
    ioeventfd(k, g.fd, four, 0xD0001000, 4, DM, 0x11223344)
    s = g.guest()
    w1 = s.write(0xD0000000, b"\x01\x02")
    w2 = s.write(0xD0001000, (0x11223344).to_bytes(4, "little"))
    w3 = s.write(0xD0001000, (0x11223345).to_bytes(4, "little"))
    assert g.run() == (0, K.KVM_EXIT_MMIO)
    assert w1.done and w2.done and w1.exits == w2.exits == []
    assert g.views[0].mmio()["phys_addr"] == 0xD0001000 and w3.exits == [K.KVM_EXIT_MMIO]
    assert (count(any_len), count(four)) == (1, 1)
    s.read(0xD0000000, 4)
    assert g.run() == (0, K.KVM_EXIT_MMIO)  # reads are not on the ioeventfd's side
    assert g.views[0].mmio()["is_write"] == 0


def test_a_write_longer_than_a_fragment_signals_per_fragment(k, efds):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    efd = efds()
    ioeventfd(k, g.fd, efd, 0xD0000008, 8)
    w = g.guest().write(0xD0000000, bytes(16))
    assert g.run() == (0, K.KVM_EXIT_MMIO)  # the first 8 bytes exit
    assert g.views[0].mmio()["phys_addr"] == 0xD0000000
    assert g.run() == (0, K.KVM_EXIT_HLT)  # the second fragment went to the eventfd
    assert w.done and w.exits == [K.KVM_EXIT_MMIO] and count(efd) == 1


def test_deassigned_ioeventfd_exits_again_and_drops_its_reference(k, efds):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    efd = efds()
    ioeventfd(k, g.fd, efd, 0x1000, 1, PIO)
    ref = E.ioeventfds(g.vm)[0].eventfd.fd
    assert ioeventfd(k, g.fd, efd, 0x1000, 1, PIO | DEASSIGN) == 0
    with pytest.raises(OSError):
        os.fstat(ref)  # the duplicate kmock held is closed
    g.guest().outb(0x1000, 1)
    assert g.run() == (0, K.KVM_EXIT_IO)
    assert count(efd) == 0


def test_ioeventfd_keeps_working_after_the_vmm_closes_its_fd(k):
    g = GuestVM(k, K.KVM_X86_DEFAULT_VM)
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    ioeventfd(k, g.fd, efd, 0x1000, 1, PIO)
    os.close(efd)  # the kernel holds its own reference on the eventfd
    g.guest().outb(0x1000, 1)
    assert g.run() == (0, K.KVM_EXIT_HLT)


def test_ioeventfd_errors_leave_nothing_registered(k, efds):
    _, vm = create_vm(k)
    efd = efds()
    assert err(ioeventfd, k, vm, efd, 0x1000, 3, PIO) == errno.EINVAL
    assert err(ioeventfd, k, vm, 1 << 30, 0x1000, 1, PIO) == errno.EBADF
    assert err(ioeventfd, k, vm, efd, 0x1000, 0, PIO | DM) == errno.EINVAL
    assert E.ioeventfds(k.vm(vm)) == []
    ioeventfd(k, vm, efd, 0x1000, 1, PIO)
    assert err(ioeventfd, k, vm, efd, 0x1000, 0, PIO) == errno.EEXIST
    assert len(E.ioeventfds(k.vm(vm))) == 1


# --- ioeventfd: registration against a model ----------------------------------------------------

_op = st.tuples(st.booleans(), st.sampled_from([0, 1]), st.sampled_from([0x10, 0x11]),
                st.sampled_from([0, 1, 2, 4, 8]), st.sampled_from([None, 0, 1]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_op, max_size=14))
def test_ioeventfd_registration_model(ops):
    """Assign/deassign on two eventfds against ioeventfd_check_collision and the deassign
    match of virt/kvm/eventfd.c (written out here independently)."""
    fds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
    try:
        with kmock.Kernel(profile="linux-6.18") as k:
            _, vm = create_vm(k)
            model = []  # (fd index, addr, len, datamatch or None)
            for deassign, which, addr, length, dm in ops:
                flags = PIO | (DEASSIGN if deassign else 0) | (0 if dm is None else DM)
                got = errno_or_0(ioeventfd, k, vm, fds[which], addr, length, flags, dm or 0)
                if deassign:
                    hit = [m for m in model if m == (which, addr, length, dm)]
                    want = 0 if hit else errno.ENOENT
                    if hit:
                        model.remove(hit[0])
                elif dm is not None and not length:
                    want = errno.EINVAL
                else:
                    clash = any(a == addr and (not n or not length or (
                        n == length and (d is None or dm is None or d == dm)))
                        for _, a, n, d in model)
                    want = errno.EEXIST if clash else 0
                    if not clash:
                        model.append((which, addr, length, dm))
                assert got == want, (deassign, which, addr, length, dm, model)
    finally:
        for fd in fds:
            os.close(fd)


# --- irqfd -----------------------------------------------------------------------------------


def test_irqfd_bookkeeping(k, efds):
    _, vm = create_vm(k)
    a, b, r = efds(), efds(), efds()
    assert err(irqfd, k, vm, a, 5) == errno.EINVAL  # no irqchip
    k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0)
    assert irqfd(k, vm, a, 5) == 0
    assert irqfd(k, vm, b, 9, U.KVM_IRQFD_FLAG_RESAMPLE, r) == 0
    got = [(i.gsi, i.resamplefd is not None) for i in E.irqfds(k.vm(vm))]
    assert got == [(5, False), (9, True)]
    assert err(irqfd, k, vm, a, 6) == errno.EBUSY
    assert irqfd(k, vm, a, 6, U.KVM_IRQFD_FLAG_DEASSIGN) == 0  # matches nothing: 0
    assert len(E.irqfds(k.vm(vm))) == 2
    assert irqfd(k, vm, a, 5, U.KVM_IRQFD_FLAG_DEASSIGN) == 0
    assert [i.gsi for i in E.irqfds(k.vm(vm))] == [9]
    assert irqfd(k, vm, a, 6) == 0  # the eventfd is free again


def test_irqfd_eventfd_is_busy_for_every_vm_until_the_vm_goes(efds):
    a = efds()
    with kmock.Kernel(profile="linux-6.18") as k:
        _, vm1 = create_vm(k)
        _, vm2 = create_vm(k)
        for vm in (vm1, vm2):
            k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0)
        irqfd(k, vm1, a, 5)
        assert err(irqfd, k, vm2, a, 5) == errno.EBUSY
        irqfd(k, vm1, a, 5, U.KVM_IRQFD_FLAG_DEASSIGN)
        assert irqfd(k, vm2, a, 5) == 0


def test_irqfd_leaves_a_pending_count(k, efds):
    _, vm = create_vm(k)
    k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0)
    a = efds()
    os.eventfd_write(a, 3)
    irqfd(k, vm, a, 5)
    assert count(a) == 3  # probed: the initial poll injects without reading


# --- routing ------------------------------------------------------------------------------------


def test_routing_replaces_the_table_and_a_failed_call_keeps_it(k):
    _, vm = create_vm(k)
    k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0)
    v = k.vm(vm)
    default = E.routes(v)
    assert len(default) == 16 + 24
    assert (0, U.KVM_IRQ_ROUTING_IRQCHIP, 0, (U.KVM_IRQCHIP_PIC_MASTER, 0)) in default
    assert (9, U.KVM_IRQ_ROUTING_IRQCHIP, 0, (U.KVM_IRQCHIP_PIC_SLAVE, 1)) in default
    routing(k, vm, [(1, U.KVM_IRQ_ROUTING_MSI, 0xFEE00000, 0, 0x41)])
    assert E.routes(v) == ((1, U.KVM_IRQ_ROUTING_MSI, 0, (0xFEE00000, 0, 0x41, 0)),)
    bad = [(2, U.KVM_IRQ_ROUTING_MSI, 0xFEE00000, 0, 1), (2, U.KVM_IRQ_ROUTING_MSI, 0, 0, 2)]
    assert err(routing, k, vm, bad) == errno.EINVAL
    assert E.routes(v)[0].gsi == 1  # unchanged
    routing(k, vm, [])
    assert E.routes(v) == ()


def test_split_irqchip_routes_start_empty(k):
    _, vm = create_vm(k)
    c = K.kvm_enable_cap(cap=K.KVM_CAP_SPLIT_IRQCHIP)
    c.args[0] = 24
    k.ioctl(vm, K.KVM_ENABLE_CAP, c)
    assert E.routes(k.vm(vm)) == ()
    assert err(routing, k, vm, [(0, U.KVM_IRQ_ROUTING_IRQCHIP, U.KVM_IRQCHIP_IOAPIC, 0)]) == errno.EINVAL


def test_signalled_irqfds_reads_the_counters_as_irqfd_wakeup(k, efds):
    _, vm = create_vm(k)
    k.ioctl(vm, X.KVM_CREATE_IRQCHIP, 0)
    a, b = efds(), efds()
    irqfd(k, vm, a, 5)
    irqfd(k, vm, b, 24)
    v = k.vm(vm)
    assert E.signalled_irqfds(v) == []
    os.eventfd_write(b, 1)
    os.eventfd_write(a, 2)
    assert E.signalled_irqfds(v) == [5, 24]
    assert count(a) == count(b) == 0  # consumed, as the kernel's read at the signal
    assert E.signalled_irqfds(v) == []


def test_a_destroyed_vm_frees_its_irqfd_eventfds(k, efds):
    a = efds()
    kvm, vm1 = create_vm(k)
    k.ioctl(vm1, X.KVM_CREATE_IRQCHIP, 0)
    irqfd(k, vm1, a, 5)
    k.close(vm1)  # kvm_vm_release -> kvm_irqfd_release
    vm2 = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    k.ioctl(vm2, X.KVM_CREATE_IRQCHIP, 0)
    assert irqfd(k, vm2, a, 5) == 0


def test_closing_the_vm_fd_unbinds_irqfds_while_a_vcpu_keeps_the_vm(k, efds):
    """kvm_vm_release -> kvm_irqfd_release (conformance eventfds_irqfd_vm_release): the
    irqfds go with the VM fd, not with the VM; its ioeventfds stay until it is destroyed."""
    a, b = efds(), efds()
    kvm, vm1 = create_vm(k)
    k.ioctl(vm1, X.KVM_CREATE_IRQCHIP, 0)
    cpu = k.ioctl(vm1, K.KVM_CREATE_VCPU, 0)
    v = k.file(vm1).vm
    irqfd(k, vm1, a, 5)
    k.ioctl(vm1, K.KVM_IOEVENTFD, K.kvm_ioeventfd(addr=0x1000, len=1, fd=b,
                                                  flags=K.KVM_IOEVENTFD_FLAG_PIO))
    k.close(vm1)
    assert not v.destroyed and E.irqfds(v) == [] and len(E.ioeventfds(v)) == 1
    vm2 = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    k.ioctl(vm2, X.KVM_CREATE_IRQCHIP, 0)
    assert irqfd(k, vm2, a, 5) == 0
    k.close(cpu)
    assert v.destroyed and E.ioeventfds(v) == []
