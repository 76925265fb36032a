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

Channel 0's hrtimer runs (create_pit_timer, pit_timer_fn, pit_do_work: :class:`Pit`): a
count loaded in mode 0, 1 or 4 ticks once after count / 1193182 s, in mode 2 or 3 every
such period (at least ``MIN_PERIOD_NS``); another mode, or the HPET legacy flag, stops it.
A tick raises and lowers GSI 0 (kmock.kvm.x86_irq.pit_pulse: the PIC's IRQ 0 and the I/O
APIC's pin the routing names). In reinject mode (the default) a tick injects only after the
guest acknowledged the previous one (irq_ack); kmock's scripted guest never acknowledges,
so after a (re)load, or reinject turned back on, exactly one tick injects; with reinject off
every tick does (conformance ``x86_pit_tick``).

Not modelled: the guest's port I/O to the PIT (0x40-0x43) and the speaker port (0x61);
the guest's acknowledgement (EOI) of the PIT's interrupt and the mask notifier; the NMI
watchdog (LVT0 in NMI mode); the PIO bus devices the PIT and speaker add
(kvm_io_bus_register_dev: they count against NR_IOBUS_DEVS in the kernel, not in
kmock.kvm.coalesced_mmio).
"""

import ctypes
import errno
import threading
import time
import weakref

from ..errors import oserror
from ..kernel_util import copy_from_user, copy_to_user
from ..uapi import x86 as X
from . import x86_irq, x86_vm


def ktime_get():
    """ktime_get: CLOCK_MONOTONIC in ns."""
    return time.monotonic_ns()


#: KVM_PIT_FREQ (arch/x86/kvm/i8254.h), Hz
KVM_PIT_FREQ = 1193182
#: the kvm module parameter min_timer_period_us (200): the shortest periodic PIT period
MIN_PERIOD_NS = 200_000


class Pit:
    """struct kvm_pit: the channels, flags and reinject mode under pit_state.lock, and
    channel 0's timer."""

    def __init__(self, config_flags, vm):
        self.lock = threading.Lock()  # pit_state.lock
        self._vm = weakref.ref(vm)
        #: KVM_PIT_SPEAKER_DUMMY: the speaker port device was registered
        self.speaker = bool(config_flags & X.KVM_PIT_SPEAKER_DUMMY)
        self.channels = (X.kvm_pit_channel_state * 3)()
        self.flags = 0
        self.reinject = False
        #: pit_state.irq_ack: the guest acknowledged the last injected tick
        self.irq_ack = True
        #: channel 0's timer: a generation (a reload or stop makes the old one's ticks
        #: void), the first expiry and the period (0: one-shot), in ktime_get ns
        self._gen = 0
        self._start = 0
        self._period = 0
        self._timer = None
        self.reset()
        self.set_reinject(True)  # kvm_create_pit: kvm_pit_set_reinject(pit, true)

    def reset(self):
        """kvm_pit_reset."""
        self.flags = 0
        for i, c in enumerate(self.channels):
            c.mode = 0xFF
            c.gate = int(i != 2)
            self.load_count(i, 0)

    def load_count(self, channel, val, hpet_legacy_start=False):
        """kvm_pit_load_count / pit_load_count: 0 is 0x10000; channels 1 and 2 are stamped
        with the time; channel 0 (re)starts its timer by mode (0, 1, 4 one-shot; 2, 3
        periodic; else stopped, as with ``hpet_legacy_start``)."""
        c = self.channels[channel]
        c.count = val or 0x10000
        if channel:
            c.count_load_time = ktime_get()
            return
        mode = 0xFF if hpet_legacy_start else c.mode
        if mode in (0, 1, 4):
            self._create_timer(c.count, periodic=False)
        elif mode in (2, 3):
            self._create_timer(c.count, periodic=True)
        else:
            self._stop_timer()

    def set_channels(self, channels, hpet_legacy_start=False):
        ctypes.memmove(self.channels, channels, ctypes.sizeof(self.channels))
        for i in range(3):
            self.load_count(i, self.channels[i].count, hpet_legacy_start and i == 0)

    def set_reinject(self, reinject):
        """kvm_pit_set_reinject: turned on, kvm_pit_reset_reinject (the next tick injects)."""
        if reinject == self.reinject:
            return
        self.reinject = reinject
        if reinject:
            self.irq_ack = True
        self._rearm()

    # --- channel 0's timer ------------------------------------------------------------------

    def _create_timer(self, count, periodic):
        """create_pit_timer: nothing with the HPET legacy flag; the interval is
        count * NSEC_PER_SEC / KVM_PIT_FREQ; pending ticks and the ack are reset."""
        self._stop_timer()
        if self.flags & X.KVM_PIT_FLAGS_HPET_LEGACY:
            return
        interval = count * 1_000_000_000 // KVM_PIT_FREQ
        if periodic:
            interval = max(interval, MIN_PERIOD_NS)
        self.irq_ack = True  # kvm_pit_reset_reinject
        self._start = ktime_get() + interval
        self._period = interval if periodic else 0
        self._gen += 1
        self._arm(self._start)

    def _stop_timer(self):
        """destroy_pit_timer."""
        self._gen += 1
        self._start = self._period = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, when):
        t = threading.Timer(max(0, when - ktime_get()) / 1e9, self._tick, (self._gen, when))
        t.daemon = True
        self._timer = t
        t.start()

    def _rearm(self):
        """After a reinject change: the next tick of a running periodic timer matters again
        (the kernel's timer never stopped; kmock's rests while its ticks would change
        nothing)."""
        if self._timer is None and self._period:
            now = ktime_get()
            n = max(0, -(-(now - self._start) // self._period))
            self._arm(self._start + n * self._period)

    def _tick(self, gen, when):
        """pit_timer_fn and pit_do_work: in reinject mode only an acknowledged tick
        injects; the timer rests once its ticks can change nothing more."""
        vm = self._vm()
        with self.lock:
            if gen != self._gen or vm is None or vm.dead or vm.destroyed:
                return
            inject = not self.reinject or self.irq_ack
            if self.reinject:
                self.irq_ack = False
            self._timer = None
            if self._period and not self.reinject:
                self._arm(when + self._period)
        if inject:
            x86_irq.pit_pulse(vm)


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
        p = Pit(flags, vm)
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
    counts reloaded (kvm_vm_ioctl_set_pit2); HPET_LEGACY set keeps channel 0's timer off,
    and turning it on loads channel 0 as if its mode were 0xff."""
    vm = _vm(f)
    ps = copy_from_user(arg, X.kvm_pit_state2)
    with x86_vm.state(vm).lock:
        p = _need(vm)
        with p.lock:
            legacy = X.KVM_PIT_FLAGS_HPET_LEGACY
            start = not p.flags & legacy and ps.flags & legacy
            p.flags = ps.flags
            p.set_channels(ps.channels, hpet_legacy_start=bool(start))
    return 0


def vm_reinject_control(f, arg):
    """KVM_REINJECT_CONTROL: the struct (EFAULT), ENXIO without a PIT; ``pit_reinject``
    is a bool (any non-zero byte), ``reserved`` is not checked."""
    vm = _vm(f)
    ctl = copy_from_user(arg, X.kvm_reinject_control)
    p = _need(vm)
    with p.lock:
        p.set_reinject(bool(ctl.pit_reinject))
    return 0
