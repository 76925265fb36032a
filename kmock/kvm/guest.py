"""Scripted guests: what a vCPU "executes" when the VMM calls KVM_RUN.

A test fills ``vm.vcpus[i].guest`` (a ``GuestScript``) before KVM_RUN::

    g = kernel.vm(vm_fd).vcpus[0].guest
    r = g.read(0x1000, 8)                       # private=None: the VM type decides
    w = g.write(0x2000, b"hi", private=True)    # an explicitly private access
    h = g.map_gpa_range(0x2000, 512, private=False, page_size=2 << 20)
    g.outb(0xE7, 1)
    g.hlt()

Each call appends an action and returns it; ``action.done`` and ``action.result`` are
set when it completes: the bytes read (``Read``), the hypercall's return value as
the guest sees it in RAX, a u64 (``Hypercall``: 0, or ``-KVM_ENOSYS`` as
``(1 << 64) - 1000``), the byte read (``Inb``), None otherwise.
``action.exits`` lists the exit reasons the action caused.

KVM_RUN runs pending actions in order until one exits (kmock.kvm.vcpu):

* Memory accesses fault pages in through kmock.kvm.stage2.faultin. Where KVM would
  exit with KVM_EXIT_MEMORY_FAULT the action stops before copying anything and is
  retried, as a whole, by the next KVM_RUN (a faulting instruction does not retire).
  An access may span pages and memslots: each page is served by its own kind, and
  the exit happens at the first page that needs one.
* A shared access where no memslot is (or a write to a read-only memslot) is
  emulated MMIO: KVM_EXIT_MMIO fragments of at most 8 bytes that do not cross a page.
  A write fragment carries its bytes in ``mmio.data``. A read fragment completes on
  the next KVM_RUN with ``mmio.data[:len]`` as kvm_run holds it then: what the VMM
  wrote there, else whatever was left in those bytes (KVM does not clear them).
  Bytes before an MMIO fragment are copied when the fragment exits and are not
  redone; a later memory fault retries from the fragment's end (the emulator's
  progress), not from the action's start.
* ``outb``/``inb``: KVM_EXIT_IO (size 1, count 1, data at kvm_run + 4096); the action
  completes on the next KVM_RUN (``inb`` reads the byte the VMM put there).
* A write (``outb``, an MMIO write fragment) that an ioeventfd of the VM matches signals
  its eventfd and completes without an exit (kmock.kvm.eventfds.io_bus_write).
* ``hypercall``/``map_gpa_range``: KVM_HC_MAP_GPA_RANGE exits with
  KVM_EXIT_HYPERCALL if the VM enabled it with KVM_CAP_EXIT_HYPERCALL; the action
  completes on the next KVM_RUN with ``run.hypercall.ret``. Otherwise, and for
  every other nr, the result is immediate (-KVM_ENOSYS / -KVM_EINVAL) with no exit.
* ``hlt`` exits with KVM_EXIT_HLT and is done at once; a script with nothing pending
  exits with KVM_EXIT_HLT on every KVM_RUN. Where the kernel halts the vCPU itself (an
  in-kernel LAPIC on x86, every arm64 vCPU: kvm_vcpu_halt / kvm_vcpu_wfi), a HLT, or a
  script with nothing pending, blocks inside KVM_RUN instead, as the kernel's
  kvm_vcpu_block does, until the guest has more to run (a test adds actions: the wake-up
  of an interrupt), or what stands for a signal to the vCPU's thread arrives:
  ``vcpu.kick()``, ``run.immediate_exit`` set by another thread (QEMU's kick sets it in
  its signal handler), or a ``stop()`` action. KVM_RUN then fails with EINTR and
  exit_reason KVM_EXIT_INTR. A VM killed meanwhile gives EIO.
* ``stop`` is a signal for the vCPU's thread arriving at that point of the guest's code:
  KVM_RUN fails with EINTR, exit_reason KVM_EXIT_INTR (kvm_handle_signal_exit).
"""

import ctypes
import errno

from .. import _libc
from ..errors import MAX_ACCESS_BYTES, KmockUsageError, check_bytes, check_int, check_length, oserror
from ..uapi import kvm as K
from .eventfds import io_bus_write
from .stage2 import PAGE_SHIFT, PAGE_SIZE, MemoryFault, faultin

U64 = (1 << 64) - 1
MMIO_MAX = 8  # bytes per KVM_EXIT_MMIO (kvm_run.mmio.data)

#: action.step() outcomes
CONTINUE = None  # the action completed, run the next one
EXIT = "exit"  # KVM_RUN returns 0 with the exit written into kvm_run
HALT = "halt"  # the vCPU halts inside KVM_RUN (see halts_in_kernel)
SIGNAL = "signal"  # a signal is pending for the vCPU's thread: KVM_RUN fails with EINTR

#: how often a halted vCPU looks at run.immediate_exit and at its script (seconds)
HALT_POLL_S = 0.005

# (the exit reasons and hypercall numbers of every KVM_RUN, as module constants: an
# attribute of the uapi module is a look-up in it on each use)
_EXIT_HYPERCALL = K.KVM_EXIT_HYPERCALL
_EXIT_MEMORY_FAULT = K.KVM_EXIT_MEMORY_FAULT
_EXIT_INTR = K.KVM_EXIT_INTR
_EINTR = errno.EINTR
_HC_MAP_GPA_RANGE = K.KVM_HC_MAP_GPA_RANGE
_HC_LONG_MODE = K.KVM_EXIT_HYPERCALL_LONG_MODE
_ENOSYS = -K.KVM_ENOSYS & U64
# kvm_run fields as indexes of the vCPU's views (Vcpu.run_u32, Vcpu.run_u64)
_EXIT_REASON_U32 = K.kvm_run.exit_reason.offset // 4
_HC_NR_U64 = (K.kvm_run.hypercall.offset + K.kvm_run_hypercall.nr.offset) // 8
_HC_A0_U64 = (K.kvm_run.hypercall.offset + K.kvm_run_hypercall.args.offset) // 8
_HC_A1_U64 = _HC_A0_U64 + 1
_HC_A2_U64 = _HC_A0_U64 + 2
_HC_RET_U64 = (K.kvm_run.hypercall.offset + K.kvm_run_hypercall.ret.offset) // 8
_HC_FLAGS_U64 = (K.kvm_run.hypercall.offset + K.kvm_run_hypercall._u.offset) // 8
_EINVAL = -K.KVM_EINVAL & U64

_PAGE_SZ_ATTRS = {
    PAGE_SIZE: K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K,
    2 << 20: K.KVM_MAP_GPA_RANGE_PAGE_SZ_2M,
    1 << 30: K.KVM_MAP_GPA_RANGE_PAGE_SZ_1G,
}


class Action:
    """One guest operation. ``done``/``result`` are set when it completes."""

    kind = "action"

    def __init__(self):
        self.done = False
        self.result = None
        #: exit reasons this action caused, in order
        self.exits = []

    def step(self, vcpu):
        """Run (or resume) the action. Return CONTINUE when done, EXIT after writing an
        exit into vcpu.run; return (or raise) a MemoryFault for KVM_EXIT_MEMORY_FAULT
        (returned costs less: see ``run``)."""
        raise NotImplementedError

    def complete(self, vcpu):
        """complete_userspace_io: the VMM re-entered KVM_RUN after this action's exit.

        Return EXIT after writing a new exit into vcpu.run to end KVM_RUN there, before
        immediate_exit is looked at and without entering the guest (the kernel's
        complete_userspace_io returning 0: e.g. TDX MapGPA's next 2 MB chunk); the
        action stays pending. Anything else: KVM_RUN goes on.
        """

    def finish(self, result=None):
        self.result = result
        self.done = True
        return CONTINUE

    def __repr__(self):
        r = self.result
        if isinstance(r, bytes) and len(r) > 16:
            r = f"{r[:16]!r}...({len(r)} bytes)"
        else:
            r = repr(r)
        state = f"done result={r}" if self.done else "pending"
        return f"<{type(self).__name__} {self._describe()} {state}>"

    def _describe(self):
        return ""


class _Access(Action):
    """A guest memory access of bytes [gpa, gpa + size)."""

    write = False

    def __init__(self, gpa, size, private):
        super().__init__()
        # (type(x) is int and in range: what check_int / check_length accept, without the call)
        if type(gpa) is not int or not 0 <= gpa <= U64:
            check_int("gpa", gpa, 0, U64)
        if type(size) is not int or not 0 <= size <= MAX_ACCESS_BYTES:
            check_length("size", size)
        if gpa + size > (1 << 64):
            raise KmockUsageError(f"gpa + size ({gpa:#x} + {size:#x}) is outside the 64-bit "
                                  f"guest physical address space")
        self.gpa = gpa
        self.size = size
        self.private = None if private is None else bool(private)
        #: bytes completed so far (advances only past emulated MMIO fragments)
        self.progress = 0
        #: why the hardware aborted the access in the guest (VmType.guest_access_early),
        #: or None
        self.aborted = None
        self._mmio = None  # (gpa, len) of the MMIO fragment awaiting completion

    def _describe(self):
        p = {None: "", True: " private", False: " shared"}[self.private]
        return f"gpa {self.gpa:#x}+{self.size:#x}{p}"

    def step(self, vcpu):
        vm = vcpu.vm
        gpa = self.gpa
        start = gpa + self.progress
        end = gpa + self.size
        if start >= end:
            return self._complete_access()
        private = self.private
        write = self.write
        vmtype = vm.vmtype
        shift = 0  # canonical gpa minus the gpa the guest used
        if vmtype.has_gpa_alias:
            # the alias bit (TDX's shared bit, CCA's unprotected half) names the kind
            canon, alias_private = vmtype.gpa_alias(vm, start)
            if private is None:
                private = alias_private
            end = canon + (end - start)
            shift = canon - start
            start = canon
        if vmtype.has_guest_access_early:
            # a stage-2 the hardware owns decides first (CCA's RTT): an abort injected
            # into the guest completes the access; an OSError ends KVM_RUN
            aborted = vmtype.guest_access_early(vcpu, start, end, private, write)
            if aborted is not None:
                self.aborted = aborted
                return self.finish(None)
        # Under mmu_lock, after any invalidation in progress: the fault, the mapping and
        # the copy happen as one access, as the hardware's access through stage-2 does.
        with vm.guest_access():
            segs = faultin(vm, start, end, private, write, not write)
            if vmtype.has_guest_access:
                refused = vmtype.guest_access(vcpu, self, segs)
                if refused is not None:
                    return refused
            for seg in segs:
                if seg.kind == "mmio":
                    return self._mmio_exit(vcpu, seg, shift)
                self._ram(vcpu, seg, shift)
                self.progress += seg.length
        return self._complete_access()

    def _ram(self, vcpu, seg, shift=0):
        """Copy the bytes of a RAM segment (``seg``: a kmock.kvm.stage2.Segment of kind
        "gmem" or "user"), one way or the other."""
        raise NotImplementedError

    def _complete_access(self):
        """The whole access is done: finish the action."""
        raise NotImplementedError

    def _mmio_exit(self, vcpu, seg, shift=0):
        """``shift``: canonical gpa minus the gpa the guest used (an alias)."""
        gpa = seg.gpa
        page_end = ((gpa >> PAGE_SHIFT) + 1) << PAGE_SHIFT
        n = min(MMIO_MAX, seg.length, page_end - gpa)
        if self.write:
            off = gpa - shift - self.gpa
            if io_bus_write(vcpu.vm, "mmio", gpa, bytes(self.data[off:off + n])):
                self.progress += n  # an ioeventfd took the fragment: no exit
                return CONTINUE
        run = vcpu.run
        run.exit_reason = K.KVM_EXIT_MMIO
        mmio = run.mmio
        mmio.phys_addr = gpa
        mmio.len = n
        mmio.is_write = int(self.write)
        if self.write:
            off = gpa - shift - self.gpa
            ctypes.memmove(ctypes.addressof(mmio.data), bytes(self.data[off:off + n]), n)
        self._mmio = (gpa - shift, n)
        self.exits.append(K.KVM_EXIT_MMIO)
        return EXIT

    def complete(self, vcpu):
        if self._mmio is None:
            return
        gpa, n = self._mmio
        self._mmio = None
        if not self.write:
            self._buf += bytes(vcpu.run.mmio.data[:n])
        self.progress = gpa + n - self.gpa


class Read(_Access):
    kind = "read"

    def __init__(self, gpa, size, private=None):
        super().__init__(gpa, size, private)
        self._buf = bytearray()

    def _ram(self, vcpu, seg, shift=0):
        if seg.kind == "gmem":
            data = seg.inode.read(seg.offset, seg.length)
        else:
            data = seg.data
        self._buf += data

    def _complete_access(self):
        return self.finish(bytes(self._buf))

    def step(self, vcpu):
        del self._buf[self.progress:]  # a retried access redoes what followed ``progress``
        return _Access.step(self, vcpu)


class Write(_Access):
    kind = "write"
    write = True

    def __init__(self, gpa, data, private=None):
        if type(data) is not bytes:  # (bytes are taken as they are: check_bytes' copy)
            data = check_bytes("data", data)
        n = len(data)
        if n > MAX_ACCESS_BYTES:
            check_length("data length", n)
        super().__init__(gpa, n, private)
        self.data = data

    def _ram(self, vcpu, seg, shift=0):
        off = seg.gpa - shift - self.gpa
        chunk = self.data[off:off + seg.length]
        if seg.kind == "gmem":
            seg.inode.write(seg.offset, chunk)
            return
        n = _libc.write_user(seg.hva, chunk)
        if n < len(chunk):
            # hva_to_pfn(FOLL_WRITE) failed: the page is not writable after all
            bad = (seg.gpa + n) >> PAGE_SHIFT
            vcpu.vm.stage2.zap(bad, seg.gfn + seg.npages)
            raise MemoryFault(errno.EFAULT, bad, False)

    def _complete_access(self):
        return self.finish(None)


def hypercall_exit(vcpu, nr, a0, a1, a2, ret=0, flags=None):
    """Write a KVM_EXIT_HYPERCALL into kvm_run: exit_reason, nr, args[0..2] and ret (0 since
    6.14's "clear vcpu->run->hypercall.ret before exiting", because QEMU <= 9.2 never set
    it); ``flags`` when the exit sets them (None: kvm_run keeps what it held, as SEV's
    page-state-change exits do). For the core, SNP and TDX alike.

    Written through the vCPU's word views of kvm_run (typed when compiled: one C store
    per field, where a ctypes field write is an attribute look-up and a descriptor
    call). A value outside the u64 range is taken modulo 2**64, as a ctypes field
    takes it."""
    words = vcpu.run_u64
    try:
        words[_HC_NR_U64] = nr
        words[_HC_A0_U64] = a0
        words[_HC_A1_U64] = a1
        words[_HC_A2_U64] = a2
        words[_HC_RET_U64] = ret
        if flags is not None:
            words[_HC_FLAGS_U64] = flags
    except (OverflowError, ValueError):  # (compiled / interpreted)
        hypercall_exit(vcpu, nr & U64, a0 & U64, a1 & U64, a2 & U64, ret & U64,
                       None if flags is None else flags & U64)
        return
    vcpu.run_u32[_EXIT_REASON_U32] = _EXIT_HYPERCALL


class Hypercall(Action):
    """VMCALL/VMMCALL with nr in RAX and a0..a3 in RBX, RCX, RDX, RSI (64-bit guest)."""

    kind = "hypercall"

    def __init__(self, nr, *args):
        super().__init__()
        n = len(args)
        if n > 4:
            raise KmockUsageError(f"args: x86 KVM hypercalls take at most 4 arguments, "
                                  f"not {n}")
        if type(nr) is not int:
            check_int("nr", nr)
        if n == 3 and type(args[0]) is int and type(args[1]) is int and type(args[2]) is int:
            # (map_gpa_range's three ints: what the loop below checks, without it)
            a0, a1, a2 = args
            self.nr = nr & U64
            self.args = (a0 & U64, a1 & U64, a2 & U64, 0)
            self._waiting = False
            return
        for i, a in enumerate(args):
            if type(a) is not int:
                check_int(f"args[{i}]", a)
        self.nr = nr & U64
        self.args = tuple(a & U64 for a in args) + (0,) * (4 - n)
        self._waiting = False

    def _describe(self):
        return f"nr {self.nr} args {tuple(hex(a) for a in self.args)}"

    def step(self, vcpu):
        """____kvm_emulate_hypercall (x86, CPL 0, long mode)."""
        vm = vcpu.vm
        if self.nr != _HC_MAP_GPA_RANGE:
            return self.finish(_ENOSYS)
        args = self.args
        gpa = args[0]
        npages = args[1]
        attrs = args[2]
        if not vm.hypercall_exit_enabled & (1 << _HC_MAP_GPA_RANGE):
            return self.finish(_ENOSYS)
        gfn = gpa >> PAGE_SHIFT
        if gpa & (PAGE_SIZE - 1) or not npages or ((gfn + npages) & U64) <= gfn:
            return self.finish(_EINVAL)
        hypercall_exit(vcpu, _HC_MAP_GPA_RANGE, gpa, npages, attrs, 0, _HC_LONG_MODE)
        self._waiting = True
        self.exits.append(_EXIT_HYPERCALL)
        return EXIT

    def complete(self, vcpu):
        """complete_hypercall: RAX = run->hypercall.ret (64-bit guest: not truncated)."""
        if self._waiting:
            self._waiting = False
            self.finish(vcpu.run_u64[_HC_RET_U64])  # (run->hypercall.ret)


class _Io(Action):
    direction = K.KVM_EXIT_IO_OUT

    def __init__(self, port):
        super().__init__()
        check_int("port", port, 0, 0xFFFF)
        self.port = port
        self._waiting = False

    def step(self, vcpu):
        if self.direction == K.KVM_EXIT_IO_OUT and io_bus_write(vcpu.vm, "pio", self.port,
                                                                bytes((self.value,))):
            return self.finish(None)  # an ioeventfd took the write: no exit
        run = vcpu.run
        run.exit_reason = K.KVM_EXIT_IO
        io = run.io
        io.direction = self.direction
        io.size = 1
        io.port = self.port
        io.count = 1
        io.data_offset = K.KVM_PIO_PAGE_OFFSET * PAGE_SIZE
        if self.direction == K.KVM_EXIT_IO_OUT:
            ctypes.c_uint8.from_address(vcpu.run_addr + io.data_offset).value = self.value
        self._waiting = True
        self.exits.append(K.KVM_EXIT_IO)
        return EXIT

    def complete(self, vcpu):
        if self._waiting:
            self._waiting = False
            result = None
            if self.direction == K.KVM_EXIT_IO_IN:
                result = ctypes.c_uint8.from_address(
                    vcpu.run_addr + K.KVM_PIO_PAGE_OFFSET * PAGE_SIZE).value
            self.finish(result)


class Outb(_Io):
    kind = "outb"

    def __init__(self, port, value):
        super().__init__(port)
        self.value = check_int("value", value) & 0xFF

    def _describe(self):
        return f"port {self.port:#x} value {self.value:#x}"


class Inb(_Io):
    kind = "inb"
    direction = K.KVM_EXIT_IO_IN

    def _describe(self):
        return f"port {self.port:#x}"


class Hlt(Action):
    kind = "hlt"

    def step(self, vcpu):
        self.finish(None)
        if halts_in_kernel(vcpu):
            return HALT
        vcpu.run.exit_reason = K.KVM_EXIT_HLT
        self.exits.append(K.KVM_EXIT_HLT)
        return EXIT


class Stop(Action):
    """A signal for the vCPU's thread arrives while the guest runs here."""

    kind = "stop"

    def step(self, vcpu):
        self.finish(None)
        self.exits.append(K.KVM_EXIT_INTR)
        return SIGNAL


def halts_in_kernel(vcpu):
    """Whether a guest HLT halts the vCPU inside KVM_RUN rather than exiting: x86's
    __kvm_emulate_halt with an in-kernel LAPIC (KVM_CREATE_IRQCHIP or a split irqchip);
    every arm64 vCPU (WFI is kvm_vcpu_wfi; arm64 has no KVM_EXIT_HLT). Fixed for the
    vCPU's life (an irqchip cannot be made once a vCPU exists), so kept on the vCPU."""
    h = vcpu.halts_in_kernel
    if h is None:
        vm = vcpu.vm
        if vm.kernel.profile.arch != "x86":
            h = True
        else:
            from . import x86_vm  # (x86 only)

            h = x86_vm.state(vm).irqchip_in_kernel
        vcpu.halts_in_kernel = h
    return h


def _signal_exit(vcpu):
    """kvm_handle_signal_exit: exit_reason KVM_EXIT_INTR, and -EINTR."""
    vcpu.run.exit_reason = _EXIT_INTR
    return oserror(_EINTR)


def _take_signal(vcpu):
    """A kick pending for the vCPU (kmock.kvm.vcpu.Vcpu.kick) is delivered: raise EINTR
    (KVM_EXIT_INTR), as vcpu_run does for a signal before it enters the guest."""
    if vcpu.signal_pending:
        with vcpu.wake:
            vcpu.signal_pending = False
        raise _signal_exit(vcpu)


def _set_mp_state(vcpu, halted):
    """x86's vcpu->arch.mp_state follows the halt (KVM_GET_MP_STATE: HALTED while the vCPU
    halts and after a signal ends the halt, RUNNABLE once the guest runs on)."""
    vcpu.halted = halted
    if vcpu.vm.kernel.profile.arch == "x86":
        from . import x86_state  # (x86 only)

        x86_state.state(vcpu).mp_state = (x86_state.X.KVM_MP_STATE_HALTED if halted
                                          else x86_state.X.KVM_MP_STATE_RUNNABLE)


def _halt(vcpu):
    """kvm_vcpu_block for a halted vCPU: return when the guest has more to run; raise
    EINTR (KVM_EXIT_INTR) for a kick or ``run.immediate_exit`` set meanwhile (the
    signal that comes with it), EIO when the VM was killed."""
    script = vcpu.guest
    run = vcpu.run
    wake = vcpu.wake
    _set_mp_state(vcpu, True)
    with wake:
        while True:
            if script.pc < len(script.actions) and not vcpu.stopped:
                break
            if vcpu.signal_pending or run.immediate_exit:
                vcpu.signal_pending = False
                raise _signal_exit(vcpu)
            if vcpu.vm.dead:
                raise oserror(errno.EIO)  # kvm_vm_dead: KVM_REQ_VM_DEAD
            wake.wait(HALT_POLL_S)
    _set_mp_state(vcpu, False)  # woken: the guest runs on


def sleep_stopped(vcpu):
    """A stopped vCPU's wait inside KVM_RUN (arm64 kvm_vcpu_sleep for KVM_REQ_SLEEP; x86's
    kvm_vcpu_block of a vCPU waiting for INIT/SIPI): return once another vCPU's CPU_ON
    or the VMM (KVM_SET_MP_STATE, KVM_ARM_VCPU_INIT) started it; raise EINTR
    (KVM_EXIT_INTR) for a kick or ``run.immediate_exit`` set meanwhile, EIO when the VM
    was killed (KVM_REQ_VM_DEAD is checked before KVM_REQ_SLEEP)."""
    run = vcpu.run
    wake = vcpu.wake
    with wake:
        while vcpu.stopped:
            if vcpu.vm.dead:
                raise oserror(errno.EIO)
            if vcpu.signal_pending or run.immediate_exit:
                vcpu.signal_pending = False
                raise _signal_exit(vcpu)
            wake.wait(HALT_POLL_S)


class GuestScript:
    """The guest code of one vCPU: a queue of actions run by KVM_RUN.

    ``namespaces``: ``{name: factory}`` from the VM type (``VmType.guest_actions``);
    each ``factory(script)`` becomes the attribute ``script.<name>`` holding that
    architecture's actions, e.g. ``vcpu.guest.tdx.accept(gpa)``.

    ``history``: how many completed actions to keep (the ``guest_history`` profile
    setting); pending actions are always kept. Arguments of the wrong type or range
    raise kmock.errors.KmockUsageError naming the argument (docs/api-errors.md).
    """

    #: completed actions kept by default (the ``guest_history`` profile setting)
    DEFAULT_HISTORY = 1000

    def __init__(self, namespaces=None, history=DEFAULT_HISTORY):
        #: the completed actions still kept (at most ``history`` of them, the newest),
        #: then the pending ones, in order
        self.actions = []
        #: index in ``actions`` of the next action to run
        self.pc = 0
        #: how many completed actions were dropped from ``actions`` (bounded memory: a
        #: VMM loop of 10**6 KVM_RUNs keeps ``history`` actions, not 10**6)
        self.retired = 0
        self.history = check_int("history", history, 0)
        for name, factory in (namespaces or {}).items():
            setattr(self, name, factory(self))

    # --- building the script -----------------------------------------------------------

    def add(self, action):
        """Append ``action`` (an Action) to the script; returns it."""
        if not isinstance(action, Action):
            raise KmockUsageError(f"action must be a kmock.kvm.guest.Action, not {action!r}")
        actions = self.actions
        extra = self.pc - self.history
        if extra >= 64 and extra >= self.history >> 2:  # (extra >= max(64, history / 4))
            # drop the oldest completed actions (in batches: amortised O(1) per add)
            del actions[:extra]
            self.pc -= extra
            self.retired += extra
        actions.append(action)
        return action

    def read(self, gpa, size, private=None):
        """Read ``size`` bytes at ``gpa``; ``result`` = the bytes. KmockUsageError for a
        gpa outside [0, 2**64), a size over kmock.errors.MAX_ACCESS_BYTES, or a range
        that passes 2**64 (nothing is queued then)."""
        return self.add(Read(gpa, size, private))

    def write(self, gpa, data, private=None):
        """Write ``data`` (bytes-like) at ``gpa``; KmockUsageError as for ``read``, and for
        data that is not bytes-like (an int is refused: ``bytes(5)`` is five zeros)."""
        return self.add(Write(gpa, data, private))

    def hypercall(self, nr, *args):
        """A KVM hypercall ``nr`` with up to 4 arguments; ``result`` = RAX."""
        return self.add(Hypercall(nr, *args))

    def map_gpa_range(self, gpa, npages, private, page_size=PAGE_SIZE, attrs=None):
        """KVM_HC_MAP_GPA_RANGE(gpa, npages, attrs); ``result`` = RAX (0 on success).

        attrs = ENCRYPTED if ``private`` else DECRYPTED, | PAGE_SZ_2M/1G for
        ``page_size``; ``attrs`` overrides it (KVM passes a2 through unchecked).
        Raises KmockUsageError for a page_size other than 4K, 2M, 1G.
        """
        if type(gpa) is not int:
            check_int("gpa", gpa)
        if type(npages) is not int:
            check_int("npages", npages)
        if attrs is not None and type(attrs) is not int:
            check_int("attrs", attrs)
        if attrs is None:
            try:
                size_bits = _PAGE_SZ_ATTRS[page_size]
            except (KeyError, TypeError):
                raise KmockUsageError(
                    f"page_size must be 4K, 2M or 1G (4096, 2 << 20, 1 << 30), "
                    f"not {page_size!r}") from None
            attrs = size_bits | (K.KVM_MAP_GPA_RANGE_ENCRYPTED if private
                                 else K.KVM_MAP_GPA_RANGE_DECRYPTED)
        return self.add(Hypercall(K.KVM_HC_MAP_GPA_RANGE, gpa, npages, attrs))

    def outb(self, port, value):
        return self.add(Outb(port, value))

    def inb(self, port):
        return self.add(Inb(port))

    def hlt(self):
        return self.add(Hlt())

    def stop(self):
        """A signal for the vCPU's thread arrives here: KVM_RUN fails with EINTR and
        exit_reason KVM_EXIT_INTR (the way to end a KVM_RUN whose guest halts in the
        kernel, from the same thread)."""
        return self.add(Stop())

    # --- state ------------------------------------------------------------------------------

    @property
    def pending(self):
        """Actions not yet run or not yet complete."""
        return self.actions[self.pc:]

    @property
    def current(self):
        return self.actions[self.pc] if self.pc < len(self.actions) else None

    @property
    def completed(self):
        """The completed actions still kept (the newest ``history`` ones, or a few more)."""
        return self.actions[:self.pc]

    def clear(self):
        """Drop every pending action (the guest "jumps" past them)."""
        del self.actions[self.pc:]

    def __len__(self):
        """How many actions were ever added (completed, dropped from history, pending)."""
        return self.retired + len(self.actions)

    def __repr__(self):
        return f"<GuestScript {self.retired + self.pc}/{len(self)} done>"


def run(vcpu):
    """The guest part of KVM_RUN: run pending actions until one exits.

    Returns 0 after writing an exit into vcpu.run, or the OSError KVM_RUN fails with
    after writing its exit: the MemoryFault of a KVM_EXIT_MEMORY_FAULT, EINTR
    (KVM_EXIT_INTR) for a signal met in the guest's code. The error is returned, not
    raised: KVM_RUN's handler raises it once (kmock.kvm.vcpu.vcpu_run), where a raise
    here would build a traceback entry in every frame on the way. A signal or a dead VM
    met while the vCPU halts or sleeps still raises.
    """
    if vcpu.signal_pending:
        _take_signal(vcpu)
    script = vcpu.guest
    actions = script.actions
    if vcpu.halted and script.pc < len(actions):
        _set_mp_state(vcpu, False)  # halted at the last KVM_RUN; the guest has more now
    while True:
        if vcpu.stopped:
            sleep_stopped(vcpu)
        pc = script.pc
        if pc >= len(actions):
            if halts_in_kernel(vcpu):
                _halt(vcpu)  # nothing to run: the guest idles in HLT / WFI
                continue
            break
        action = actions[pc]
        try:
            r = action.step(vcpu)
        except MemoryFault as mf:
            r = mf  # (raised by the step: handled as one it returns)
        if r is not CONTINUE and r is not EXIT and isinstance(r, MemoryFault):
            # kvm_prepare_memory_fault_exit; the action does not retire
            r.fill(vcpu.run)
            action.exits.append(_EXIT_MEMORY_FAULT)
            return r
        if action.done:
            script.pc += 1
        if r is EXIT:
            if not action.done:
                vcpu.pending = action
            return 0
        if r is HALT:
            _halt(vcpu)
        elif r is SIGNAL:
            return _signal_exit(vcpu)
    vcpu.run.exit_reason = K.KVM_EXIT_HLT
    return 0
