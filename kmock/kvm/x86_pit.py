"""The in-kernel i8254 PIT: KVM_CREATE_PIT(2), KVM_GET/SET_PIT(2), KVM_REINJECT_CONTROL.

Linux 6.18: kvm_arch_vm_ioctl (x86.c: each ioctl's copy and check order) and i8254.c
(kvm_create_pit, kvm_pit_reset, pit_load_count, kvm_vm_ioctl_get/set_pit(2),
kvm_vm_ioctl_reinject). Compared with the 6.18.44 host by the conformance scenario
``x86_pit``.

The state is struct kvm_kpit_state's channels (kvm_pit_channel_state, 24 bytes each,
stored as written: no field is checked), its ``flags`` (any u32) and ``reinject``. What
the kernel recomputes on a SET is recomputed here: pit_load_count turns a count of 0
into 0x10000 and stamps channels 1 and 2 with ktime_get() (CLOCK_MONOTONIC ns,
``time.monotonic_ns()`` here: the same clock, so a value read back lies between the
monotonic clock read before and after the call, on the real kernel as here). Channel 0
keeps the count_load_time given (its time base is the hrtimer, which the kernel does not
copy out). The reset state (kvm_pit_reset at creation): mode 0xff, gate 1, 1, 0, count
0x10000, count_load_time 0 for channel 0 and the creation time for 1 and 2.

Not modelled: the channel-0 hrtimer and its ticks on GSI 0 (pit_timer_fn -> kvm_set_irq),
so a programmed periodic mode raises nothing; the guest's port I/O to the PIT (0x40-0x43)
and the speaker port (0x61); the reinject mode's acks (recorded only); the PIO bus
devices the PIT and speaker add (kvm_io_bus_register_dev: they count against
NR_IOBUS_DEVS in the kernel, not in kmock.kvm.coalesced_mmio).
"""

import ctypes
import errno
import threading
import time
import weakref

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import x86 as X
from . import x86_vm


def ktime_get():
    """ktime_get: CLOCK_MONOTONIC in ns."""
    return time.monotonic_ns()


class Pit:
    """struct kvm_pit: the channels, flags and reinject mode under pit_state.lock."""

    def __init__(self, config_flags):
        self.lock = threading.Lock()  # pit_state.lock
        #: KVM_PIT_SPEAKER_DUMMY: the speaker port device was registered
        self.speaker = bool(config_flags & X.KVM_PIT_SPEAKER_DUMMY)
        self.channels = (X.kvm_pit_channel_state * 3)()
        self.flags = 0
        self.reinject = False
        self.reset()
        self.reinject = True  # kvm_create_pit: kvm_pit_set_reinject(pit, true)

    def reset(self):
        """kvm_pit_reset."""
        self.flags = 0
        for i, c in enumerate(self.channels):
            c.mode = 0xFF
            c.gate = int(i != 2)
            self.load_count(i, 0)

    def load_count(self, channel, val):
        """pit_load_count: 0 is 0x10000; channels 1 and 2 are stamped with the time
        (channel 0's timer is not modelled)."""
        c = self.channels[channel]
        c.count = val or 0x10000
        if channel:
            c.count_load_time = ktime_get()

    def set_channels(self, channels):
        ctypes.memmove(self.channels, channels, ctypes.sizeof(self.channels))
        for i in range(3):
            self.load_count(i, self.channels[i].count)


_PITS = weakref.WeakKeyDictionary()
_PITS_LOCK = threading.Lock()  # the dict is shared by every VM


def pit(vm):
    """kvm->arch.vpit: the VM's Pit, or None."""
    return _PITS.get(vm)


def _vm(f):
    f.vm.check_caller()
    return f.vm


def _create(vm, flags):
    """The create_pit label: under kvm->lock, EEXIST with a PIT, ENOENT without the full
    in-kernel irqchip (pic_in_kernel: none or split)."""
    s = x86_vm.state(vm)
    with s.lock:
        if vm in _PITS:
            raise oserror(errno.EEXIST)
        if s.irqchip_mode != "kernel":
            raise oserror(errno.ENOENT)
        p = Pit(flags)
        with _PITS_LOCK:
            _PITS[vm] = p
    return 0


def vm_create_pit2(f, arg):
    """KVM_CREATE_PIT2: the kvm_pit_config (EFAULT); its flags and pad are not checked
    (only KVM_PIT_SPEAKER_DUMMY means something)."""
    vm = _vm(f)
    return _create(vm, copy_from_user(arg, X.kvm_pit_config).flags)


def vm_create_pit(f, arg):
    """KVM_CREATE_PIT (the old one, still there in 6.18): KVM_CREATE_PIT2 with
    KVM_PIT_SPEAKER_DUMMY; the argument is ignored."""
    return _create(_vm(f), X.KVM_PIT_SPEAKER_DUMMY)


def _need(vm):
    p = pit(vm)
    if p is None:
        raise oserror(errno.ENXIO)
    return p


def vm_get_pit(f, arg):
    """KVM_GET_PIT: the struct is read first (EFAULT), then ENXIO without a PIT."""
    vm = _vm(f)
    ps = copy_from_user(arg, X.kvm_pit_state)
    p = _need(vm)
    with p.lock:
        ctypes.memmove(ps.channels, p.channels, ctypes.sizeof(ps.channels))
    copy_to_user(arg, ps)
    return 0


def vm_set_pit(f, arg):
    """KVM_SET_PIT: EFAULT, then ENXIO; the channels as given, counts reloaded (flags
    unchanged)."""
    vm = _vm(f)
    ps = copy_from_user(arg, X.kvm_pit_state)
    with x86_vm.state(vm).lock:
        p = _need(vm)
        with p.lock:
            p.set_channels(ps.channels)
    return 0


def vm_get_pit2(f, arg):
    """KVM_GET_PIT2: ENXIO without a PIT (nothing is read), then the channels and flags
    with ``reserved`` zeroed (EFAULT on the write)."""
    vm = _vm(f)
    p = _need(vm)
    ps = X.kvm_pit_state2()
    with p.lock:
        ctypes.memmove(ps.channels, p.channels, ctypes.sizeof(ps.channels))
        ps.flags = p.flags
    copy_to_user(arg, ps)
    return 0


def vm_set_pit2(f, arg):
    """KVM_SET_PIT2: EFAULT, then ENXIO; the channels and flags as given (no bit checked),
    counts reloaded. HPET_LEGACY turned on only keeps channel 0's timer off, which is not
    modelled."""
    vm = _vm(f)
    ps = copy_from_user(arg, X.kvm_pit_state2)
    with x86_vm.state(vm).lock:
        p = _need(vm)
        with p.lock:
            p.flags = ps.flags
            p.set_channels(ps.channels)
    return 0


def vm_reinject_control(f, arg):
    """KVM_REINJECT_CONTROL: the struct (EFAULT), ENXIO without a PIT; ``pit_reinject``
    is a bool (any non-zero byte), ``reserved`` is not checked."""
    vm = _vm(f)
    ctl = copy_from_user(arg, X.kvm_reinject_control)
    p = _need(vm)
    with p.lock:
        p.reinject = bool(ctl.pit_reinject)
    return 0
