"""KVM_IRQFD, KVM_IOEVENTFD and KVM_SET_GSI_ROUTING on the arm64 profiles: the generic code
of kmock.kvm.eventfds with the vGIC's part (kmock_arm64.irqfd).

Sources, Linux 6.18: virt/kvm/eventfd.c (kvm_irqfd_assign: kvm_arch_intc_initialized ->
EAGAIN before anything; irqfd_wakeup, irqfd_inject, irqfd_update), virt/kvm/irqchip.c
(kvm_set_irq_routing, setup_routing_entry), virt/kvm/kvm_main.c
(kvm_vm_ioctl_check_extension_generic, kvm_vm_ioctl KVM_SET_GSI_ROUTING),
arch/arm64/kvm/arm.c (kvm_vm_ioctl_check_extension, kvm_arch_intc_initialized),
arch/arm64/kvm/vgic/vgic-irqfd.c (kvm_set_routing_entry, vgic_irqfd_set_irq,
kvm_arch_set_irq_inatomic, kvm_set_msi, kvm_vgic_setup_default_irq_routing),
include/kvm/arm_vgic.h (KVM_IRQCHIP_NUM_PINS), arch/arm64/kvm/Kconfig.
"""

import ctypes
import errno
import os

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import kmock
import kmock_arm64
from kmock.kvm import eventfds as E
from kmock.testing.errnos import err
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from ._util import psci_vcpu, run_exit

G_ADDR, G_CTRL = A.KVM_DEV_ARM_VGIC_GRP_ADDR, A.KVM_DEV_ARM_VGIC_GRP_CTRL
IRQCHIP, MSI = K.KVM_IRQ_ROUTING_IRQCHIP, K.KVM_IRQ_ROUTING_MSI
DEASSIGN, RESAMPLE = K.KVM_IRQFD_FLAG_DEASSIGN, K.KVM_IRQFD_FLAG_RESAMPLE


class Vm:
    """An arm64 VM on ``linux-arm64``; ``gic()`` makes a vGIC (v3 by default)."""

    def __init__(self):
        self.k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
        self.kvm = self.k.open("/dev/kvm", os.O_RDWR)
        self.fd = self.k.ioctl(self.kvm, K.KVM_CREATE_VM, 0)
        self.vm = self.k.vm(self.fd)
        self.dev = None
        self.efds = []

    def close(self):
        self.k.close_all()
        for fd in self.efds:
            os.close(fd)

    def gic(self, model=A.KVM_DEV_TYPE_ARM_VGIC_V3):
        cd = A.kvm_create_device(type=model)
        self.k.ioctl(self.fd, A.KVM_CREATE_DEVICE, cd)
        self.dev = cd.fd
        return self

    def attr(self, group, a, value=0):
        buf = ctypes.c_uint64(value)
        self.k.ioctl(self.dev, A.KVM_SET_DEVICE_ATTR,
                     A.kvm_device_attr(group=group, attr=a, addr=ctypes.addressof(buf)))

    def init_gic(self):
        """GICv3 with its distributor and one redistributor, CTRL_INIT."""
        self.attr(G_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_DIST, 0x08000000)
        self.attr(G_ADDR, A.KVM_VGIC_V3_ADDR_TYPE_REDIST, 0x080A0000)
        self.attr(G_CTRL, A.KVM_DEV_ARM_VGIC_CTRL_INIT)
        return self

    def vcpu(self, i=0):
        return psci_vcpu(self.k, self.fd, i)

    def efd(self):
        fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.efds.append(fd)
        return fd

    def irqfd(self, fd, gsi, flags=0, resamplefd=0):
        return self.k.ioctl(self.fd, K.KVM_IRQFD,
                            K.kvm_irqfd(fd=fd, gsi=gsi, flags=flags, resamplefd=resamplefd))

    def routing(self, entries):
        size = ctypes.sizeof(K.kvm_irq_routing_entry)
        buf = bytearray(8 + size * max(len(entries), 1))
        buf[:8] = K.kvm_irq_routing(nr=len(entries))
        for i, (gsi, typ, flags, *u) in enumerate(entries):
            e = K.kvm_irq_routing_entry(gsi=gsi, type=typ, flags=flags)
            for j, v in enumerate(u):
                e.u.pad[j] = v
            buf[8 + i * size:8 + (i + 1) * size] = bytes(e)
        return self.k.ioctl(self.fd, K.KVM_SET_GSI_ROUTING, buf)

    @property
    def vgic(self):
        return self.vm.arch.vgic


@pytest.fixture
def v():
    vm = Vm()
    yield vm
    vm.close()


def test_capabilities_are_the_arm64_kernels():
    """kvm_vm_ioctl_check_extension_generic + arm.c, under arch/arm64/kvm/Kconfig:
    IRQFD, IOEVENTFD, IRQFD_RESAMPLE, IOEVENTFD_ANY_LENGTH, HALT_POLL 1; IRQ_ROUTING
    KVM_MAX_IRQ_ROUTES; no IOEVENTFD_NO_LENGTH (x86.c only)."""
    v = Vm()
    try:
        for fd in (v.kvm, v.fd):
            check = (lambda c: v.k.ioctl(fd, K.KVM_CHECK_EXTENSION, c))
            assert [check(c) for c in (32, 36, 82, 122, K.KVM_CAP_HALT_POLL)] == [1] * 5
            assert check(25) == 4096
            assert check(100) == 0
    finally:
        v.close()


# --- KVM_IRQFD ------------------------------------------------------------------------------


def test_irqfd_needs_an_initialised_vgic(v):
    """kvm_irqfd_assign: !kvm_arch_intc_initialized (arm.c: vgic_initialized) -> EAGAIN,
    before the eventfd is looked at (a bad fd still gives EAGAIN); deassign needs none."""
    efd = v.efd()
    assert err(v.irqfd, efd, 0) == errno.EAGAIN  # no vGIC
    assert err(v.irqfd, 12345, 0) == errno.EAGAIN
    v.gic()
    assert err(v.irqfd, efd, 0) == errno.EAGAIN  # a GICv3 before CTRL_INIT
    assert v.irqfd(efd, 0, DEASSIGN) == 0
    v.init_gic()
    assert v.irqfd(efd, 0) == 0
    assert err(v.irqfd, 12345, 1) == errno.EBADF
    assert err(v.irqfd, efd, 1) == errno.EBUSY
    assert err(v.irqfd, efd, 0, 4) == errno.EINVAL  # flags beyond DEASSIGN | RESAMPLE


def test_resample_is_allowed(v):
    """kvm_arch_irqfd_allowed is the __weak default on arm64 (x86's needs the full
    irqchip for RESAMPLE); arm.c advertises KVM_CAP_IRQFD_RESAMPLE."""
    v.gic().init_gic()
    efd, rfd = v.efd(), v.efd()
    assert v.irqfd(efd, 3, RESAMPLE, rfd) == 0
    [i] = E.irqfds(v.vm)
    assert (i.gsi, i.resamplefd is not None) == (3, True)


def test_signalled_irqfd_raises_its_spi_at_the_next_run(v):
    """irqfd_wakeup -> kvm_arch_set_irq_inatomic: one route (vgic_init's default, gsi i ->
    pin i) to an initialised vGIC: vgic_irqfd_set_irq raises SPI pin + 32 at level 1, as
    KVM_IRQ_LINE(SPI) does. kmock injects at KVM_RUN's entry."""
    v.gic()
    cpu = v.vcpu()
    v.init_gic()
    efd = v.efd()
    assert v.irqfd(efd, 5) == 0
    os.eventfd_write(efd, 1)
    assert v.vgic.lines == {}
    v.vm.vcpus[0].guest.stop()
    assert run_exit(v.k, cpu) == K.KVM_EXIT_INTR
    assert v.vgic.lines == {(None, 37): True} and v.vgic.raised == {(None, 37): 1}
    assert E.signalled_irqfds(v.vm) == []  # the counter was read
    os.eventfd_write(efd, 3)  # one wakeup however many writes were folded
    assert E.signalled_irqfds(v.vm) == [5]
    assert v.vgic.raised == {(None, 37): 2}
    # the same SPI through KVM_IRQ_LINE
    v.k.ioctl(v.fd, K.KVM_IRQ_LINE, K.kvm_irq_level(
        irq=A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 37), level=1))
    assert v.vgic.raised == {(None, 37): 3}


def test_count_pending_at_assign_is_injected(v):
    """kvm_irqfd_assign: vfs_poll finds EPOLLIN -> schedule_work(irqfd_inject): the work
    path, kvm_set_irq(gsi, 1) then (no resampler) kvm_set_irq(gsi, 0): a pulse."""
    v.gic().init_gic()
    efd = v.efd()
    os.eventfd_write(efd, 1)
    assert v.irqfd(efd, 2) == 0
    assert v.vgic.raised == {(None, 34): 1} and v.vgic.lines == {(None, 34): False}


def test_resampler_work_path_leaves_the_line_up(v):
    """irqfd_inject with a resampler: kvm_set_irq(KVM_IRQFD_RESAMPLE_IRQ_SOURCE_ID, gsi, 1)
    only (the line stays up until the guest's EOI, which kmock does not model); the
    inatomic path that later signals take ignores the resampler (level 1 as well)."""
    v.gic().init_gic()
    efd = v.efd()
    os.eventfd_write(efd, 1)
    assert v.irqfd(efd, 2, RESAMPLE, v.efd()) == 0
    assert v.vgic.raised == {(None, 34): 1} and v.vgic.lines == {(None, 34): True}


def test_a_gsi_has_one_route_on_arm64(v):
    """setup_routing_entry: a second route of a gsi is EINVAL unless both are IRQCHIP routes
    to different chips; arm64 has one chip (KVM_NR_IRQCHIPS), so never."""
    assert err(v.routing, [(7, IRQCHIP, 0, 0, 9), (7, MSI, 0, 0x08020040, 0, 1)]) == \
        errno.EINVAL
    assert err(v.routing, [(7, IRQCHIP, 0, 0, 9), (7, IRQCHIP, 0, 0, 10)]) == errno.EINVAL


def test_msi_route_is_accepted_but_injects_nothing_without_its(v):
    """kvm_set_routing_entry keeps an MSI route as given; kvm_set_msi: !vgic_has_its ->
    -ENODEV (kmock models no ITS), so its irqfd raises nothing; KVM_SIGNAL_MSI says
    ENODEV."""
    v.gic().init_gic()
    assert v.routing([(0, MSI, K.KVM_MSI_VALID_DEVID, 0x08020040, 0, 33, 8)]) == 0
    efd = v.efd()
    v.irqfd(efd, 0)
    os.eventfd_write(efd, 1)
    assert E.signalled_irqfds(v.vm) == [0]
    assert v.vgic.raised == {} and v.vgic.lines == {}
    assert err(v.k.ioctl, v.fd, K.KVM_SIGNAL_MSI, K.kvm_msi(address_lo=0x08020040)) == \
        errno.ENODEV


def test_spi_past_the_vgic_is_dropped(v):
    """vgic_irqfd_set_irq: !vgic_valid_spi (pin + 32 >= nr_spis + 32) -> -EINVAL, ignored."""
    v.gic().init_gic()
    assert v.routing([(0, IRQCHIP, 0, 0, 300)]) == 0  # 256 IRQs: SPIs 32..255
    efd = v.efd()
    v.irqfd(efd, 0)
    os.eventfd_write(efd, 1)
    assert E.signalled_irqfds(v.vm) == [0] and v.vgic.raised == {}


# --- KVM_SET_GSI_ROUTING ---------------------------------------------------------------------


def test_routing_entry_checks(v):
    """kvm_set_routing_entry (vgic-irqfd.c): pin >= KVM_IRQCHIP_NUM_PINS (988) or irqchip >=
    KVM_NR_IRQCHIPS (1) -> EINVAL; types other than IRQCHIP and MSI -> EINVAL; the
    generic checks stay (gsi >= 4096, flags, a gsi routed twice to one chip). A failed
    table changes nothing. No vGIC is needed (kvm_arch_can_set_irq_routing: __weak)."""
    assert v.routing([(0, IRQCHIP, 0, 0, 987)]) == 0
    kept = E.routes(v.vm)
    for bad in ([(0, IRQCHIP, 0, 0, 988)], [(0, IRQCHIP, 0, 1, 0)],
                [(0, K.KVM_IRQ_ROUTING_S390_ADAPTER, 0)], [(0, K.KVM_IRQ_ROUTING_HV_SINT, 0)],
                [(4096, IRQCHIP, 0, 0, 0)], [(0, IRQCHIP, 1, 0, 0)],
                [(0, MSI, 2, 0, 0, 0)], [(1, IRQCHIP, 0, 0, 1), (1, IRQCHIP, 0, 0, 2)]):
        assert err(v.routing, bad) == errno.EINVAL, bad
    assert E.routes(v.vm) == kept
    assert v.routing([]) == 0 and E.routes(v.vm) == ()


_entry = st.one_of(
    st.tuples(st.sampled_from([0, 1, 4095, 4096]), st.just(IRQCHIP), st.sampled_from([0, 1]),
              st.sampled_from([0, 1]), st.sampled_from([0, 5, 987, 988])),
    st.tuples(st.sampled_from([0, 1, 2]), st.just(MSI), st.sampled_from([0, 1, 2]),
              st.integers(0, 2 ** 32 - 1), st.just(0), st.integers(0, 9)),
    st.tuples(st.sampled_from([0, 3]), st.sampled_from([0, 3, 4, 5, 6]), st.just(0)))


def _model_accepts(entries):
    """kvm_set_irq_routing's rules on arm64, written from the source: every gsi < 4096
    first; then per entry: flags (MSI: VALID_DEVID only; others none), no second route
    for a gsi (one chip), kvm_set_routing_entry (IRQCHIP chip < 1, pin < 988; MSI; no
    other type)."""
    if any(e[0] >= 4096 for e in entries):
        return False
    seen = set()
    for gsi, typ, flags, *u in entries:
        if flags & ~(K.KVM_MSI_VALID_DEVID if typ == MSI else 0):
            return False
        if gsi in seen:
            return False
        seen.add(gsi)
        if typ == IRQCHIP and (u[0] >= 1 or u[1] >= 988) or typ not in (IRQCHIP, MSI):
            return False
    return True


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(tables=st.lists(st.lists(_entry, max_size=4), min_size=1, max_size=4))
def test_routing_tables_against_a_model(tables):
    """Random KVM_SET_GSI_ROUTING tables: accepted exactly when the model says so; an
    accepted table is what the VM routes by, a refused one (EINVAL) changes nothing."""
    v = Vm()
    try:
        want = ()
        for t in tables:
            if _model_accepts(t):
                assert v.routing(t) == 0
                want = tuple((g, typ, f, tuple(u[:2]) if typ == IRQCHIP else (*u, 0))
                             for g, typ, f, *u in t)
            else:
                assert err(v.routing, t) == errno.EINVAL
            assert tuple(tuple(e) for e in E.routes(v.vm)) == want
    finally:
        v.close()


def test_vgic_init_installs_the_default_routing(v):
    """vgic_init -> kvm_vgic_setup_default_irq_routing: gsi i -> chip 0 pin i for each SPI,
    replacing a table set before; none before the vGIC is initialised."""
    v.gic()
    assert E.routes(v.vm) == ()
    v.routing([(3, IRQCHIP, 0, 0, 100)])
    v.init_gic()
    r = E.routes(v.vm)
    assert len(r) == 224 and r[3] == (3, IRQCHIP, 0, (0, 3))
    assert r[-1] == (223, IRQCHIP, 0, (0, 223))


def test_gicv2_initialises_lazily_on_injection(v):
    """A GICv2 with user routing: kvm_vgic_inject_irq's vgic_lazy_init initialises it (and
    vgic_init installs the default routing); a GICv3 without CTRL_INIT refuses (EBUSY)."""
    v.gic(A.KVM_DEV_TYPE_ARM_VGIC_V2)
    v.k.ioctl(v.fd, K.KVM_IRQ_LINE, K.kvm_irq_level(
        irq=A.KVM_ARM_IRQ(A.KVM_ARM_IRQ_TYPE_SPI, 0, 40), level=1))
    assert v.vgic.initialized and len(E.routes(v.vm)) == 224


# --- KVM_IOEVENTFD --------------------------------------------------------------------------


def test_ioeventfd_takes_a_guest_mmio_write(v):
    """kvm_ioeventfd is generic: an MMIO write that matches signals the eventfd and does not
    exit (ioeventfd_write); KVM_IOEVENTFD works without a vGIC; errnos as on x86."""
    efd = v.efd()
    cpu = v.vcpu()
    assert v.k.ioctl(v.fd, K.KVM_IOEVENTFD, K.kvm_ioeventfd(addr=0x0a000050, len=4, fd=efd)) == 0
    assert err(v.k.ioctl, v.fd, K.KVM_IOEVENTFD,
               K.kvm_ioeventfd(addr=0x0a000050, len=3, fd=efd)) == errno.EINVAL
    assert err(v.k.ioctl, v.fd, K.KVM_IOEVENTFD,
               K.kvm_ioeventfd(addr=0x0a000050, len=4, fd=efd)) == errno.EEXIST
    g = v.vm.vcpus[0].guest
    g.write(0x0a000050, b"\x01\x00\x00\x00")
    g.write(0x0a000060, b"\x01\x00\x00\x00")
    assert run_exit(v.k, cpu) == K.KVM_EXIT_MMIO
    assert v.vm.vcpus[0].run.mmio.phys_addr == 0x0a000060
    assert os.eventfd_read(efd) == 1
