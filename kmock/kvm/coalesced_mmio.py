"""KVM_REGISTER_COALESCED_MMIO / KVM_UNREGISTER_COALESCED_MMIO (virt/kvm/coalesced_mmio.c,
Linux 6.18; conformance scenario ``coalesced_mmio``).

A zone is a device on the VM's MMIO (or, with ``pio``, PIO) bus whose writes the kernel
queues in a ring page instead of exiting. kmock keeps the zones with the kernel's checks
(``pio`` other than 0 or 1 EINVAL; at most NR_IOBUS_DEVS devices per bus, ENOSPC, where the
in-kernel PIC and I/O APIC count too; unregistering removes every zone of that bus that
contains the range, and always succeeds). Not modelled: the ring itself. A scripted
guest's write to a zone still exits as an MMIO or I/O exit, and the ring page (page
KVM_COALESCED_MMIO_PAGE_OFFSET of the vCPU mapping) stays empty: a VMM that flushes the
ring before handling an exit, as QEMU does, sees the same writes, in exits instead.
"""

import errno
import threading

from ..errors import oserror
from ..kernel_util import copy_from_user
from ..uapi import kvm as K
from . import x86_vm
from .attached import Attached

#: include/linux/kvm_host.h
NR_IOBUS_DEVS = 1000
#: the in-kernel irqchip's devices on each bus (kvm_pic_init: master, slave, ELCR on
#: the PIO bus; kvm_ioapic_init: the I/O APIC on the MMIO bus)
IRQCHIP_DEVICES = {True: 3, False: 1}


class _Zones:
    def __init__(self):
        self.lock = threading.Lock()  # kvm->slots_lock
        self.zones = []  # (addr, size, pio) in registration order


_state = Attached(lambda vm: _Zones())


def _bus_devices(vm, pio):
    """Devices of the bus other than ioeventfds, before the zones: the irqchip's, and on
    the PIO bus the PIT's (kvm_create_pit: the PIT, and the speaker port with
    KVM_PIT_SPEAKER_DUMMY)."""
    if vm.kernel.profile.arch != "x86" or x86_vm.state(vm).irqchip_mode != "kernel":
        return 0
    n = IRQCHIP_DEVICES[pio]
    if pio:
        from . import x86_pit  # (x86 only)

        p = x86_pit.pit(vm)
        if p is not None:
            n += 1 + p.speaker
    return n


def _zone_arg(f, arg):
    """Both ioctls' start: the caller check, the zone (EFAULT), pio not 0 or 1 (EINVAL)."""
    vm = f.vm
    vm.check_caller()
    zone = copy_from_user(arg, K.kvm_coalesced_mmio_zone)
    if zone.pio not in (0, 1):
        raise oserror(errno.EINVAL)
    return vm, zone, bool(zone.pio)


def register(f, arg):
    """kvm_vm_ioctl_register_coalesced_mmio: the zone (EFAULT), pio not 0/1 EINVAL, then
    kvm_io_bus_register_dev (ENOSPC with NR_IOBUS_DEVS devices on the bus). Zones may
    overlap and repeat (the kernel does not look)."""
    vm, zone, pio = _zone_arg(f, arg)
    z = _state(vm)
    with z.lock:
        used = _bus_devices(vm, pio) + sum(1 for e in z.zones if e[2] == pio)
        if used > NR_IOBUS_DEVS - 1:
            raise oserror(errno.ENOSPC)
        z.zones.append((zone.addr, zone.size, pio))
    return 0


def _contains(entry, addr, size):
    """coalesced_mmio_in_range: [addr, addr + size) inside the zone, without wrapping."""
    zaddr, zsize, _ = entry
    end = addr + size
    return end < 1 << 64 and addr >= zaddr and end <= zaddr + zsize


def unregister(f, arg):
    """kvm_vm_ioctl_unregister_coalesced_mmio: the zone (EFAULT), pio not 0/1 EINVAL;
    every zone of that bus that contains the range goes; 0 even when none does."""
    vm, zone, pio = _zone_arg(f, arg)
    z = _state(vm)
    with z.lock:
        z.zones = [e for e in z.zones
                   if not (e[2] == pio and _contains(e, zone.addr, zone.size))]
    return 0


def zones(vm):
    """The VM's coalesced zones, (addr, size, pio) in registration order (for tests)."""
    z = _state.get(vm)
    return list(z.zones) if z else []


def vm_ioctls():
    return {K.KVM_REGISTER_COALESCED_MMIO: register,
            K.KVM_UNREGISTER_COALESCED_MMIO: unregister}
