"""KVM_IRQ_LINE / KVM_IRQ_LINE_STATUS (kmock.kvm.x86_irq) on profile linux-6.18.

Every status here was read on a 6.18.44 host (conformance scenario x86_irq_line, which
runs the same calls on /dev/kvm and on the mock); these tests pin the model's rules by
name: the PIC's edge memory, the masked I/O APIC's coalescing, MSI delivery through the
APIC map.
"""

import ctypes
import errno
import threading

import pytest

from kmock.kvm import x86_irq
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._util import create_vm, err

SPLIT_IRQCHIP = 121


def line(k, vm, gsi, level):
    ev = K.kvm_irq_level(irq=gsi, level=level)
    assert k.ioctl(vm, K.KVM_IRQ_LINE_STATUS, ev) == 0
    return ev.status


def split_vm(k):
    kvm, vm = create_vm(k)
    cap = K.kvm_enable_cap(cap=SPLIT_IRQCHIP)
    cap.args[0] = 24
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    return vm


def msi_route(k, vm, gsi, address_lo, data):
    class Table(ctypes.Structure):
        _fields_ = [("nr", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                    ("e", K.kvm_irq_routing_entry * 1)]
    t = Table(nr=1)
    t.e[0].gsi, t.e[0].type = gsi, 2
    t.e[0].u.msi.address_lo, t.e[0].u.msi.data = address_lo, data
    k.ioctl(vm, K.KVM_SET_GSI_ROUTING, t)


def test_no_irqchip_is_enxio_and_the_struct_is_read_first(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, K.KVM_IRQ_LINE_STATUS, K.kvm_irq_level(irq=0, level=1)) == errno.ENXIO
    assert err(k.ioctl, vm, K.KVM_IRQ_LINE, K.kvm_irq_level(irq=0, level=1)) == errno.ENXIO
    assert err(k.ioctl, vm, K.KVM_IRQ_LINE_STATUS, 8) == errno.EFAULT  # copy_from_user first


def test_kernel_irqchip_pic_edge_and_ioapic_coalescing(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    # GSI 3: PIC pin 3 and I/O APIC pin 3 (masked): 1 + skipped -1, then the PIC
    # remembers the raised edge (1) while the I/O APIC coalesces (0)
    assert [line(k, vm, 3, lvl) for lvl in (1, 1, 0, 1)] == [1, 1, 2, 0]
    # GSI 16: the I/O APIC only
    assert [line(k, vm, 16, lvl) for lvl in (1, 1, 0)] == [-1, 0, 1]
    assert line(k, vm, 24, 1) == -1  # no route


def test_slave_request_cascades_to_master_pin_2(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    assert line(k, vm, 8, 1) == 1
    assert line(k, vm, 2, 1) == 0  # pin 2's request is already pending from the cascade


def test_irq_line_writes_nothing_back(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    ev = K.kvm_irq_level(irq=16, level=1)
    assert k.ioctl(vm, K.KVM_IRQ_LINE, ev) == 0
    assert ev.irq == 16


def test_msi_delivery_follows_the_apic_map_and_svr(k):
    vm = split_vm(k)
    msi_route(k, vm, 5, 0xFEE00000, 0x0030)  # fixed, physical destination 0
    assert line(k, vm, 5, 1) == -1  # no vCPU: no map, nothing matched
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert line(k, vm, 5, 1) == 0  # the map was built without the new vCPU
    page = bytearray(1024)
    k.ioctl(cpu, X86.KVM_GET_LAPIC, page)
    page[0xF0:0xF4] = (0x1FF).to_bytes(4, "little")
    k.ioctl(cpu, X86.KVM_SET_LAPIC, bytes(page))
    assert line(k, vm, 5, 1) == 1
    assert line(k, vm, 5, 0) == -1  # kvm_set_msi ignores a lowering


@pytest.mark.parametrize("data,want", [(0x0230, 0), (0x0430, 1), (0x0530, 1), (0x0730, 0)])
def test_delivery_modes_on_a_software_disabled_apic(k, data, want):
    """SMI needs KVM_CAP_X86_SMM (not in linux-6.18's table), NMI and INIT need no SVR,
    ExtINT is never accepted from an MSI."""
    vm = split_vm(k)
    msi_route(k, vm, 5, 0xFEE00000, data)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    page = bytearray(1024)
    k.ioctl(cpu, X86.KVM_GET_LAPIC, page)
    k.ioctl(cpu, X86.KVM_SET_LAPIC, bytes(page))
    assert line(k, vm, 5, 1) == want


def test_concurrent_lines_keep_the_pic_consistent(k):
    """kvm_pic_set_irq runs under pic_lock: raises and lowerings from several threads
    leave the statuses in the kernel's range and the irqchips usable."""
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    seen, errors = set(), []

    def worker(gsi):
        try:
            for i in range(300):
                seen.add(line(k, vm, gsi, i & 1))
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(g,)) for g in (1, 3, 8, 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert seen <= {-1, 0, 1, 2}
    assert x86_irq.chips(k.file(vm).vm).pics[0].irr & 0b1010  # pins 1 and 3 were raised


def test_ioctl_numbers():
    """_IOW(KVMIO, 0x61, struct kvm_irq_level) etc., as QEMU 7.2 issues them (traced)."""
    assert (K.KVM_IRQ_LINE, K.KVM_IRQ_LINE_STATUS, K.KVM_SIGNAL_MSI) == (0x4008AE61, 0xC008AE67, 0x4020AEA5)
    assert ctypes.sizeof(K.kvm_irq_level) == 8 and ctypes.sizeof(K.kvm_msi) == 32


def signal(k, vm, lo, data, hi=0, flags=0):
    return k.ioctl(vm, K.KVM_SIGNAL_MSI, K.kvm_msi(address_lo=lo, address_hi=hi, data=data, flags=flags))


def test_signal_msi_counts_accepting_lapics_and_eperm_for_none(k):
    vm = split_vm(k)
    assert err(signal, k, vm, 0xFEE00000, 0x0030) == errno.EPERM  # no LAPIC matched: -1
    cpus = [k.ioctl(vm, K.KVM_CREATE_VCPU, i) for i in range(2)]
    for cpu in cpus:
        page = bytearray(1024)
        k.ioctl(cpu, X86.KVM_GET_LAPIC, page)
        page[0xF0:0xF4] = (0x1FF).to_bytes(4, "little")
        k.ioctl(cpu, X86.KVM_SET_LAPIC, bytes(page))
    assert signal(k, vm, 0xFEE00000, 0x0030) == 1
    assert signal(k, vm, 0xFEEFF000, 0x0030) == 2  # xAPIC broadcast
    assert signal(k, vm, 0xFEE07000, 0x0030) == 0  # a destination the map lacks
    assert err(signal, k, vm, 0xFEE00000, 0x0030, flags=2) == errno.EINVAL


def test_signal_msi_needs_an_irqchip(k):
    _, vm = create_vm(k)
    assert err(signal, k, vm, 0xFEE00000, 0x0030) == errno.EINVAL
