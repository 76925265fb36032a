"""Conformance scenarios of KVM_IOEVENTFD, KVM_IRQFD and KVM_SET_GSI_ROUTING
(kmock.kvm.eventfds).

Registered into kmock.testing.conformance.SCENARIOS when that module is imported.
Sources: virt/kvm/eventfd.c (kvm_ioeventfd, kvm_assign_ioeventfd_idx,
kvm_deassign_ioeventfd_idx, ioeventfd_check_collision, kvm_irqfd, kvm_irqfd_assign,
kvm_irqfd_deassign), virt/kvm/kvm_main.c (KVM_SET_GSI_ROUTING), virt/kvm/irqchip.c
(kvm_set_irq_routing, setup_routing_entry), arch/x86/kvm/irq.c (kvm_arch_irqfd_allowed,
kvm_set_routing_entry). The eventfds are real ones of this process on both sides.
"""

import ctypes
import os

from ..uapi import kvm as E
from ..kvm import x86_vm as X
from ..uapi import kvm as K
from .conformance import create_vm, open_kvm, scenario

DM, PIO, DEASSIGN, CCW = (E.KVM_IOEVENTFD_FLAG_DATAMATCH, E.KVM_IOEVENTFD_FLAG_PIO,
                          E.KVM_IOEVENTFD_FLAG_DEASSIGN, E.KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY)
RESAMPLE = E.KVM_IRQFD_FLAG_RESAMPLE


def _closed_fd():
    """A number no fd has (above any RLIMIT_NOFILE: fdget finds nothing, EBADF); a
    number closed just now would be reused by the next open of the scenario."""
    return 1 << 30


def _eventfds(n):
    return [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(n)]


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def ioeventfd(sys, rec, vm, label, fd, addr, length, flags=0, datamatch=0):
    a = E.kvm_ioeventfd(datamatch=datamatch, addr=addr, len=length, fd=fd, flags=flags)
    return rec.call(label, sys.ioctl, vm, E.KVM_IOEVENTFD, a)


def irqfd(sys, rec, vm, label, fd, gsi, flags=0, resamplefd=0):
    a = E.kvm_irqfd(fd=fd & 0xFFFFFFFF, gsi=gsi, flags=flags, resamplefd=resamplefd & 0xFFFFFFFF)
    return rec.call(label, sys.ioctl, vm, E.KVM_IRQFD, a)


def eventfd_count(fd):
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("eventfd-count:"):
                return int(line.split()[1], 16)
    return None


def routing(sys, rec, vm, label, entries, nr=None, flags=0):
    """entries: (gsi, type, flags, u32 fields...) tuples."""
    size = ctypes.sizeof(E.kvm_irq_routing_entry)
    buf = bytearray(8 + size * max(len(entries), 1))
    buf[0:8] = E.kvm_irq_routing(nr=len(entries) if nr is None else nr, flags=flags)
    for i, (gsi, typ, fl, *u) in enumerate(entries):
        e = E.kvm_irq_routing_entry(gsi=gsi, type=typ, flags=fl)
        for j, v in enumerate(u):
            e.u.pad[j] = v
        buf[8 + i * size:8 + (i + 1) * size] = bytes(e)
    return rec.call(label, sys.ioctl, vm, E.KVM_SET_GSI_ROUTING, buf)


@scenario("eventfds_ioeventfd",
          "KVM_IOEVENTFD: length, overflow, flags, DATAMATCH with length 0 (EINVAL, before the "
          "eventfd), EBADF/EINVAL for the eventfd, EEXIST collisions per bus, deassign without "
          "flag checks, ENOENT when nothing matches")
def eventfds_ioeventfd(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    efd, efd2, efd3 = fds = _eventfds(3)
    bad = _closed_fd()
    r, w = os.pipe()
    fds += [r, w]
    try:
        ioeventfd(sys, rec, vm, "PIO 0x1000 len 1", efd, 0x1000, 1, PIO)
        ioeventfd(sys, rec, vm, "PIO 0x1000 len 1 again", efd, 0x1000, 1, PIO)
        ioeventfd(sys, rec, vm, "PIO 0x1000 len 1 other eventfd", efd2, 0x1000, 1, PIO)
        ioeventfd(sys, rec, vm, "PIO 0x1000 len 2", efd, 0x1000, 2, PIO)
        ioeventfd(sys, rec, vm, "PIO 0x1000 len 0", efd, 0x1000, 0, PIO)
        for n in (3, 5, 16):
            ioeventfd(sys, rec, vm, f"PIO 0x1100 len {n}", efd, 0x1100, n, PIO)
        ioeventfd(sys, rec, vm, "len 3, closed fd", bad, 0x1100, 3, PIO)
        ioeventfd(sys, rec, vm, "flags 0x10", efd, 0x1100, 1, PIO | 0x10)
        ioeventfd(sys, rec, vm, "flags 0x20", efd, 0x1180, 1, PIO | 0x20)
        ioeventfd(sys, rec, vm, "flags 0x20, closed fd", bad, 0x1180, 1, PIO | 0x20)
        ioeventfd(sys, rec, vm, "len 0 DATAMATCH", efd, 0x1100, 0, PIO | DM)
        ioeventfd(sys, rec, vm, "len 0 DATAMATCH, closed fd", bad, 0x1100, 0, PIO | DM)
        ioeventfd(sys, rec, vm, "addr 2**64-1 len 1", efd, 2**64 - 1, 1)
        ioeventfd(sys, rec, vm, "addr 2**64-8 len 8", efd, 2**64 - 8, 8)
        ioeventfd(sys, rec, vm, "addr 2**64-1 len 1, closed fd", bad, 2**64 - 1, 1)
        ioeventfd(sys, rec, vm, "closed fd", bad, 0x1100, 1, PIO)
        ioeventfd(sys, rec, vm, "fd -1", -1, 0x1100, 1, PIO)
        ioeventfd(sys, rec, vm, "/dev/kvm fd", kvm, 0x1100, 1, PIO)
        ioeventfd(sys, rec, vm, "pipe fd", r, 0x1100, 1, PIO)
        ioeventfd(sys, rec, vm, "PIO 0x2000 len 4 datamatch 1", efd, 0x2000, 4, PIO | DM, 1)
        ioeventfd(sys, rec, vm, "PIO 0x2000 len 4 datamatch 2", efd, 0x2000, 4, PIO | DM, 2)
        ioeventfd(sys, rec, vm, "PIO 0x2000 len 4 datamatch 1 again", efd2, 0x2000, 4, PIO | DM, 1)
        ioeventfd(sys, rec, vm, "PIO 0x2000 len 4 wildcard", efd2, 0x2000, 4, PIO)
        ioeventfd(sys, rec, vm, "PIO 0x2000 len 0", efd2, 0x2000, 0, PIO)
        ioeventfd(sys, rec, vm, "PIO 0x2000 len 1 datamatch 1", efd2, 0x2000, 1, PIO | DM, 1)
        ioeventfd(sys, rec, vm, "MMIO 0x1000 len 1", efd, 0x1000, 1)
        ioeventfd(sys, rec, vm, "MMIO 0x3000 len 0", efd, 0x3000, 0)
        ioeventfd(sys, rec, vm, "MMIO 0x3000 len 8", efd2, 0x3000, 8)
        ioeventfd(sys, rec, vm, "CCW 0x1000 len 1", efd, 0x1000, 1, CCW)
        ioeventfd(sys, rec, vm, "CCW 0x1000 len 1 again", efd, 0x1000, 1, CCW)
        ioeventfd(sys, rec, vm, "PIO|CCW 0x1000 len 1 (the PIO bus)", efd, 0x1000, 1, PIO | CCW)
        # deassign
        ioeventfd(sys, rec, vm, "deassign PIO 0x1000 len 1", efd, 0x1000, 1, PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "deassign PIO 0x1000 len 1 again", efd, 0x1000, 1, PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "PIO 0x1000 len 1 after deassign", efd3, 0x1000, 1, PIO)
        ioeventfd(sys, rec, vm, "deassign PIO 0x1000 len 2 other eventfd", efd2, 0x1000, 2,
                  PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "deassign closed fd", bad, 0x1000, 2, PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "deassign /dev/kvm fd", kvm, 0x1000, 2, PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "deassign len 3", efd, 0x1000, 3, PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "deassign len 3, closed fd", bad, 0x1000, 3, PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "deassign flags 0x10 PIO 0x1000 len 2", efd, 0x1000, 2,
                  PIO | DEASSIGN | 0x10)
        ioeventfd(sys, rec, vm, "deassign wildcard 0x2000 len 4", efd, 0x2000, 4, PIO | DEASSIGN)
        ioeventfd(sys, rec, vm, "deassign datamatch 3", efd, 0x2000, 4, PIO | DM | DEASSIGN, 3)
        ioeventfd(sys, rec, vm, "deassign datamatch 2", efd, 0x2000, 4, PIO | DM | DEASSIGN, 2)
        ioeventfd(sys, rec, vm, "deassign MMIO 0x3000 len 0", efd, 0x3000, 0, DEASSIGN)
        ioeventfd(sys, rec, vm, "MMIO 0x3000 len 8 after deassign", efd2, 0x3000, 8)
        ioeventfd(sys, rec, vm, "deassign CCW 0x1000 len 1", efd, 0x1000, 1, CCW | DEASSIGN)
        os.close(efd3)
        ioeventfd(sys, rec, vm, "deassign PIO 0x1000 len 1 (its fd closed)", efd3, 0x1000, 1,
                  PIO | DEASSIGN)
    finally:
        _close_all(fds)


@scenario("eventfds_irqfd",
          "KVM_IRQFD: unknown flags -> EINVAL; no irqchip -> EINVAL (before the fd); EBADF/EINVAL "
          "for fd and resamplefd; one irqfd per eventfd (EBUSY); RESAMPLE needs the full irqchip; "
          "deassign needs no irqchip and a match; the counter pending at assign stays")
def eventfds_irqfd(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    efd, efd2, efd3, efd4, efd5 = fds = _eventfds(5)
    bad = _closed_fd()
    try:
        irqfd(sys, rec, vm, "no irqchip: gsi 5", efd, 5)
        irqfd(sys, rec, vm, "no irqchip: closed fd", bad, 5)
        irqfd(sys, rec, vm, "no irqchip: flags 4", efd, 5, 4)
        irqfd(sys, rec, vm, "no irqchip: deassign", efd, 5, E.KVM_IRQFD_FLAG_DEASSIGN)
        irqfd(sys, rec, vm, "no irqchip: deassign closed fd", bad, 5, E.KVM_IRQFD_FLAG_DEASSIGN)
        rec.call("CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
        irqfd(sys, rec, vm, "gsi 5", efd, 5)
        irqfd(sys, rec, vm, "gsi 5 again", efd, 5)
        irqfd(sys, rec, vm, "same eventfd gsi 6", efd, 6)
        irqfd(sys, rec, vm, "other eventfd gsi 5", efd2, 5)
        irqfd(sys, rec, vm, "closed fd", bad, 7)
        irqfd(sys, rec, vm, "fd 0xffffffff", -1, 7)
        irqfd(sys, rec, vm, "/dev/kvm fd", kvm, 7)
        irqfd(sys, rec, vm, "flags 4, closed fd", bad, 7, 4)
        irqfd(sys, rec, vm, "gsi 0xffffffff", efd3, 0xFFFFFFFF)
        irqfd(sys, rec, vm, "RESAMPLE closed resamplefd", efd4, 8, RESAMPLE, bad)
        irqfd(sys, rec, vm, "RESAMPLE /dev/kvm resamplefd", efd4, 8, RESAMPLE, kvm)
        irqfd(sys, rec, vm, "RESAMPLE closed fd", bad, 8, RESAMPLE, efd4)
        irqfd(sys, rec, vm, "RESAMPLE gsi 8", efd4, 8, RESAMPLE, efd5)
        irqfd(sys, rec, vm, "deassign gsi 6 (bound to 5)", efd, 6, E.KVM_IRQFD_FLAG_DEASSIGN)
        irqfd(sys, rec, vm, "gsi 6 after a deassign that matched nothing", efd, 6)
        irqfd(sys, rec, vm, "deassign gsi 5", efd, 5, E.KVM_IRQFD_FLAG_DEASSIGN)
        irqfd(sys, rec, vm, "deassign closed fd", bad, 5, E.KVM_IRQFD_FLAG_DEASSIGN)
        irqfd(sys, rec, vm, "deassign /dev/kvm fd", kvm, 5, E.KVM_IRQFD_FLAG_DEASSIGN)
        irqfd(sys, rec, vm, "deassign|RESAMPLE gsi 8", efd4, 8,
              E.KVM_IRQFD_FLAG_DEASSIGN | RESAMPLE)
        os.eventfd_write(efd, 3)
        irqfd(sys, rec, vm, "gsi 6 after deassign, counter 3 pending", efd, 6)
        rec.record("counter after KVM_IRQFD", eventfd_count(efd))
        vm2 = create_vm(sys, rec, kvm, label="VM 2")
        e = K.kvm_enable_cap(cap=K.KVM_CAP_SPLIT_IRQCHIP)
        e.args[0] = 24
        rec.call("VM 2: SPLIT_IRQCHIP 24", sys.ioctl, vm2, K.KVM_ENABLE_CAP, e)
        irqfd(sys, rec, vm2, "VM 2 (split): gsi 5", efd2, 5)
        irqfd(sys, rec, vm2, "VM 2 (split): RESAMPLE gsi 9", efd3, 9, RESAMPLE, efd5)
    finally:
        _close_all(fds)


IRQCHIP, MSI, S390, HV_SINT, XEN = (E.KVM_IRQ_ROUTING_IRQCHIP, E.KVM_IRQ_ROUTING_MSI,
                                    E.KVM_IRQ_ROUTING_S390_ADAPTER, E.KVM_IRQ_ROUTING_HV_SINT,
                                    E.KVM_IRQ_ROUTING_XEN_EVTCHN)
PICM, PICS, IOAPIC = E.KVM_IRQCHIP_PIC_MASTER, E.KVM_IRQCHIP_PIC_SLAVE, E.KVM_IRQCHIP_IOAPIC


@scenario("eventfds_gsi_routing",
          "KVM_SET_GSI_ROUTING: no irqchip, nr > 4096, flags -> EINVAL; per entry: gsi >= 4096, "
          "flags, type, irqchip pins (PIC 8, I/O APIC 24), one route per gsi except irqchip "
          "routes to different chips; a split irqchip takes no irqchip routes; 32-bit x2APIC ids "
          "forbid MSI address_hi bits 7:0")
def eventfds_gsi_routing(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    routing(sys, rec, vm, "no irqchip: nr 0", [])
    routing(sys, rec, vm, "no irqchip: nr 4097", [], nr=4097)
    rec.call("CREATE_IRQCHIP", sys.ioctl, vm, X.KVM_CREATE_IRQCHIP, 0)
    routing(sys, rec, vm, "nr 0", [])
    routing(sys, rec, vm, "nr 4097", [], nr=4097)
    routing(sys, rec, vm, "flags 1", [], flags=1)
    cases = [
        ("PIC master pin 7", [(0, IRQCHIP, 0, PICM, 7)]),
        ("PIC master pin 8", [(0, IRQCHIP, 0, PICM, 8)]),
        ("PIC slave pin 7", [(0, IRQCHIP, 0, PICS, 7)]),
        ("PIC slave pin 8", [(0, IRQCHIP, 0, PICS, 8)]),
        ("IOAPIC pin 23", [(0, IRQCHIP, 0, IOAPIC, 23)]),
        ("IOAPIC pin 24", [(0, IRQCHIP, 0, IOAPIC, 24)]),
        ("irqchip 3", [(0, IRQCHIP, 0, 3, 0)]),
        ("irqchip flags 1", [(0, IRQCHIP, 1, IOAPIC, 0)]),
        ("gsi 4095", [(4095, IRQCHIP, 0, IOAPIC, 0)]),
        ("gsi 4096", [(4096, IRQCHIP, 0, IOAPIC, 0)]),
        ("gsi 4096 after a bad entry", [(0, 9, 0), (4096, MSI, 0)]),
        ("MSI", [(1, MSI, 0, 0xFEE00000, 0, 0x30)]),
        ("MSI flags VALID_DEVID", [(1, MSI, 1, 0xFEE00000, 0, 0x30, 7)]),
        ("MSI flags 2", [(1, MSI, 2, 0xFEE00000, 0, 0x30)]),
        ("MSI address_hi 0xff", [(1, MSI, 0, 0xFEE00000, 0xFF, 0x30)]),
        ("type 0", [(1, 0, 0)]),
        ("type S390_ADAPTER", [(1, S390, 0)]),
        ("type HV_SINT", [(1, HV_SINT, 0, 0, 1)]),
        ("type XEN_EVTCHN port 0", [(1, XEN, 0, 0, 0, 0)]),
        ("type XEN_EVTCHN port 1024", [(1, XEN, 0, 1024, 0, 0)]),
        ("type XEN_EVTCHN priority 1", [(1, XEN, 0, 0, 0, 1)]),
        ("type 6", [(1, 6, 0)]),
        ("PIC master + IOAPIC on gsi 2", [(2, IRQCHIP, 0, PICM, 2), (2, IRQCHIP, 0, IOAPIC, 2)]),
        ("IOAPIC twice on gsi 2", [(2, IRQCHIP, 0, IOAPIC, 2), (2, IRQCHIP, 0, IOAPIC, 3)]),
        ("PIC master + slave on gsi 2", [(2, IRQCHIP, 0, PICM, 2), (2, IRQCHIP, 0, PICS, 2)]),
        ("MSI twice on gsi 3", [(3, MSI, 0, 0xFEE00000, 0, 1), (3, MSI, 0, 0xFEE00000, 0, 2)]),
        ("IOAPIC + MSI on gsi 3", [(3, IRQCHIP, 0, IOAPIC, 3), (3, MSI, 0, 0xFEE00000, 0, 2)]),
        ("MSI + IOAPIC on gsi 3", [(3, MSI, 0, 0xFEE00000, 0, 2), (3, IRQCHIP, 0, IOAPIC, 3)]),
        ("MSI on gsi 3 and 4", [(3, MSI, 0, 0xFEE00000, 0, 1), (4, MSI, 0, 0xFEE00000, 0, 2)]),
    ]
    for label, entries in cases:
        routing(sys, rec, vm, label, entries)
    vm2 = create_vm(sys, rec, kvm, label="VM 2")
    e = K.kvm_enable_cap(cap=K.KVM_CAP_SPLIT_IRQCHIP)
    e.args[0] = 24
    rec.call("VM 2: SPLIT_IRQCHIP 24", sys.ioctl, vm2, K.KVM_ENABLE_CAP, e)
    routing(sys, rec, vm2, "VM 2 (split): nr 0", [])
    routing(sys, rec, vm2, "VM 2 (split): IOAPIC pin 0", [(0, IRQCHIP, 0, IOAPIC, 0)])
    routing(sys, rec, vm2, "VM 2 (split): MSI address_hi 0x1", [(1, MSI, 0, 0xFEE00000, 1, 0)])
    e = K.kvm_enable_cap(cap=K.KVM_CAP_X2APIC_API)
    e.args[0] = X.X2APIC_ENABLE_SUPPRESS_EOI >> 2  # KVM_X2APIC_API_USE_32BIT_IDS
    rec.call("VM 2: X2APIC_API USE_32BIT_IDS", sys.ioctl, vm2, K.KVM_ENABLE_CAP, e)
    routing(sys, rec, vm2, "VM 2 (32-bit ids): MSI address_hi 0x1", [(1, MSI, 0, 0xFEE00000, 1, 0)])
    routing(sys, rec, vm2, "VM 2 (32-bit ids): MSI address_hi 0x100",
            [(1, MSI, 0, 0xFEE00000, 0x100, 0)])


@scenario("eventfds_irqfd_vm_release",
          "kvm_vm_release -> kvm_irqfd_release: closing the VM fd unbinds its irqfds even while a "
          "vCPU fd keeps the VM alive (the eventfd is free for another VM's irqfd at once); the "
          "vCPU fd still works")
def eventfds_irqfd_vm_release(sys, rec):
    (efd,) = fds = _eventfds(1)
    try:
        kvm = open_kvm(sys, rec)
        vm1 = create_vm(sys, rec, kvm, label="VM 1: KVM_CREATE_VM")
        rec.call("VM 1: KVM_CREATE_IRQCHIP", sys.ioctl, vm1, X.KVM_CREATE_IRQCHIP, 0)
        cpu = rec.call("VM 1: KVM_CREATE_VCPU 0", sys.ioctl, vm1, K.KVM_CREATE_VCPU, 0)
        irqfd(sys, rec, vm1, "VM 1: irqfd gsi 5", efd, 5)
        vm2 = create_vm(sys, rec, kvm, label="VM 2: KVM_CREATE_VM")
        rec.call("VM 2: KVM_CREATE_IRQCHIP", sys.ioctl, vm2, X.KVM_CREATE_IRQCHIP, 0)
        irqfd(sys, rec, vm2, "VM 2: irqfd of VM 1's eventfd", efd, 6)
        rec.call("close VM 1's fd (its vCPU fd stays open)", sys.close, vm1)
        irqfd(sys, rec, vm2, "VM 2: irqfd of the eventfd after VM 1's fd closed", efd, 6)
        if cpu is not None:
            rec.call("VM 1's vCPU: KVM_GET_REGS", sys.ioctl, cpu,
                     K.KVM_GET_REGS, K.kvm_regs())
            rec.call("close VM 1's vCPU", sys.close, cpu)
    finally:
        _close_all(fds)
