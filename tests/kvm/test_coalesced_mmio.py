"""KVM_(UN)REGISTER_COALESCED_MMIO (kmock.kvm.coalesced_mmio) on profile linux-6.18.

The errno, the bus limit and the unregister semantics were compared with a 6.18.44 host
(conformance scenario coalesced_mmio); these tests pin the zones kept.
"""

import errno

from kmock.kvm import coalesced_mmio
from kmock.uapi import kvm as K

from ._util import create_vm, err


def reg(k, vm, addr, size, pio=0, req=K.KVM_REGISTER_COALESCED_MMIO):
    return k.ioctl(vm, req, K.kvm_coalesced_mmio_zone(addr=addr, size=size, pio=pio))


def unreg(k, vm, addr, size, pio=0):
    return reg(k, vm, addr, size, pio, K.KVM_UNREGISTER_COALESCED_MMIO)


def test_ioctl_numbers():
    assert (K.KVM_REGISTER_COALESCED_MMIO, K.KVM_UNREGISTER_COALESCED_MMIO) == (0x4010AE67, 0x4010AE68)


def test_zones_kept_and_removed_by_containment(k):
    _, vm = create_vm(k)
    v = k.file(vm).vm
    reg(k, vm, 0x1000, 0x1000)
    reg(k, vm, 0x1000, 0x1000)
    reg(k, vm, 0x1800, 0x1000)
    reg(k, vm, 0x70, 2, pio=1)
    assert err(reg, k, vm, 0x70, 2, pio=2) == errno.EINVAL
    assert coalesced_mmio.zones(v) == [(0x1000, 0x1000, False)] * 2 + [(0x1800, 0x1000, False),
                                                                      (0x70, 2, True)]
    assert unreg(k, vm, 0x1100, 0x10) == 0  # inside both copies of the first zone only
    assert coalesced_mmio.zones(v) == [(0x1800, 0x1000, False), (0x70, 2, True)]
    assert unreg(k, vm, 0x70, 2) == 0  # the MMIO bus: the PIO zone stays
    assert unreg(k, vm, 0x9000, 1) == 0  # nothing contains it: still 0
    assert coalesced_mmio.zones(v) == [(0x1800, 0x1000, False), (0x70, 2, True)]


def test_bus_limit_counts_the_irqchip(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    for i in range(coalesced_mmio.NR_IOBUS_DEVS - 3):  # the PIC's master, slave, ELCR
        reg(k, vm, i, 1, pio=1)
    assert err(reg, k, vm, 0x5000, 1, pio=1) == errno.ENOSPC
    assert reg(k, vm, 0x5000, 1) == 0  # the MMIO bus has room
