"""The TD guest's side: ``vcpu.guest.tdx.<action>(...)`` script actions.

``accept(gpa, level=0)``     TDG.MEM.PAGE.ACCEPT; ``result`` = the TDX status (RAX)
``release(gpa, level=0)``    TDG.MEM.PAGE.RELEASE (TDX Connect); ``result`` = the status
``map_gpa(gpa, size)``       TDG.VP.VMCALL<MapGPA>; ``result`` = (R10, R11)
``report_fatal_error(...)``  TDG.VP.VMCALL<ReportFatalError>: KVM_EXIT_SYSTEM_EVENT TDX_FATAL
``get_quote(gpa, size)``     TDG.VP.VMCALL<GetQuote>: KVM_EXIT_TDX; ``result`` = R10

The guest's GPA carries the shared bit (47 or 51, from the TD's GPAW). Plain memory accesses
are the core's ``vcpu.guest.read/write``: with ``private=None`` the shared bit decides
(the VM type's gpa_alias), as the CPU's page walk does in a TD.
"""

import ctypes

from kmock.kvm.guest import CONTINUE, EXIT, Action, hypercall_exit
from kmock.kvm.stage2 import faultin
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from .mapgpa import EXIT_FLAGS, EXIT_NR, MapGpa
from .sept import LEVEL_PAGES, OK, OPERAND_INVALID
from .td import PAGE_SHIFT, TdKilled, gmem_page_of, zero_pages

U64 = (1 << 64) - 1
_EXIT_HYPERCALL = K.KVM_EXIT_HYPERCALL
_MAP_GPA_EXIT = 1 << K.KVM_HC_MAP_GPA_RANGE
_SUCCESS = T.TDX_SUCCESS


def _tdx_exit(vcpu):
    return T.kvm_run_tdx.from_address(vcpu.run_addr + K.kvm_run.exit.offset)


class Accept(Action):
    """TDG.MEM.PAGE.ACCEPT of the page (level 0 = 4K, 1 = 2M) at ``gpa``.

    The module's answer (sept.Sept.accept): PENDING -> MAPPED and zeroed (TDX_SUCCESS);
    a page with no leaf yet, or blocked, is a TD exit: KVM takes it as a private fault
    (KVM_EXIT_MEMORY_FAULT with the PRIVATE flag if the attribute is shared; else
    guest_memfd's page is AUGed, PENDING) and the guest re-executes the ACCEPT.
    """

    kind = "tdx.accept"

    def __init__(self, gpa, level=0):
        super().__init__()
        self.gpa = gpa & U64
        self.level = level

    def _describe(self):
        return f"gpa {self.gpa:#x} level {self.level}"

    def step(self, vcpu):
        vm = vcpu.vm
        td = vm.arch
        gpa, level = self.gpa, self.level
        if level not in (0, 1):
            return self.finish(OPERAND_INVALID)
        # (C integers when compiled, guest.pxd: the GPA is a u64 and GPAW 48 or 52)
        shared_bit, gpaw = td.shared_bit, td.gpaw
        gfn = gpa >> PAGE_SHIFT
        npages = LEVEL_PAGES[level]
        if gpa & shared_bit or gpa >> gpaw or gfn % npages or gpa & 0xFFF:
            return self.finish(OPERAND_INVALID)
        sept = td.sept
        r = None
        with vm.guest_access():
            for _ in range(3):
                lock = td.lock
                lock.acquire()
                try:
                    # a 4K page: True (accepted), False (no leaf yet), without a SeptResult
                    accepted = sept.accept_page(gfn) if npages == 1 else None
                    if accepted is None:
                        r = sept.accept(gfn, npages, level)
                finally:
                    lock.release()
                if accepted is None:
                    if not r.td_exit:
                        break
                    at = r.gfn
                elif accepted:
                    break
                else:
                    at = gfn
                # EPT violation at the faulting gfn: KVM's private fault maps (AUGs) it
                size = LEVEL_PAGES[1] if td.huge_pages and level == 1 else 1
                faultin(vm, at << PAGE_SHIFT, (at + size) << PAGE_SHIFT, True, False,
                        want_data=False)
                if vm.dead:  # the fault's SEAMCALL failed: KVM_BUG_ON, KVM_RUN -EIO
                    raise TdKilled(vm.dead_reason)
            else:
                raise RuntimeError(f"TDX accept at gpa {at << PAGE_SHIFT:#x} keeps exiting")
            if accepted or r is OK or r.ok:
                page = gmem_page_of(vm, gfn)
                if page is not None:
                    zero_pages(page[0], page[1], npages)
                td.pulled.set(gfn, gfn + npages, 0)
        # (Action.finish by name: compiled, a C call without the look-up for an override
        # on the action's instance dict, as on every fresh action a cpdef call makes)
        return Action.finish(self, _SUCCESS if accepted else r.status)


class Release(Action):
    """TDG.MEM.PAGE.RELEASE: MAPPED -> PENDING; the page is no longer TD-DMA pinned, the
    host may now remove it. The guest must not touch it again before a new ACCEPT."""

    kind = "tdx.release"

    def __init__(self, gpa, level=0):
        super().__init__()
        self.gpa = gpa & U64
        self.level = level

    def step(self, vcpu):
        vm = vcpu.vm
        td = vm.arch
        gpa, level = self.gpa, self.level
        if level not in (0, 1, 2) or gpa & td.shared_bit or gpa >> td.gpaw or gpa & 0xFFF:
            return self.finish(OPERAND_INVALID)
        gfn = gpa >> PAGE_SHIFT
        if gfn % LEVEL_PAGES[level]:
            return self.finish(OPERAND_INVALID)
        with vm.guest_access():
            with td.lock:
                r = td.sept.release(gfn, LEVEL_PAGES[level], level)
        return self.finish(r.status)


class MapGpaCall(Action):
    """TDG.VP.VMCALL<MapGPA>(gpa, size) as KVM runs it (kmock_tdx.mapgpa): one
    KVM_EXIT_HYPERCALL per 2 MB chunk; RETRY with R11 = the next GPA when an event is
    pending for the vCPU between chunks (KVM_NMI); ``result`` = (R10, R11)."""

    kind = "tdx.map_gpa"

    def __init__(self, gpa, size):
        super().__init__()
        self.gpa = gpa & U64
        self.size = size & U64
        self.call = None

    def _describe(self):
        return f"gpa {self.gpa:#x} size {self.size:#x}"

    def _exit(self, vcpu):
        """Write the pending chunk's KVM_EXIT_HYPERCALL (MapGpa.exit) into kvm_run."""
        call = self.call
        a0, a1, a2 = call.args
        hypercall_exit(vcpu, EXIT_NR, a0, a1, a2, 0, EXIT_FLAGS)
        self.exits.append(_EXIT_HYPERCALL)
        return EXIT

    def step(self, vcpu):
        vm = vcpu.vm
        td = vm.arch
        enabled = bool(vm.hypercall_exit_enabled & _MAP_GPA_EXIT)
        self.call = call = MapGpa(self.gpa, self.size, gpaw=td.gpaw, exit_enabled=enabled)
        if not call.begin():
            return Action.finish(self, call.result)  # (by name: see Accept.step)
        return self._exit(vcpu)

    def complete(self, vcpu):
        """tdx_complete_vmcall_map_gpa: the next chunk's exit ends KVM_RUN at once."""
        call = self.call
        if call is None or self.done:
            return CONTINUE
        tv = vcpu.arch
        if not call.answer(vcpu.run_hypercall.ret, tv.pending_event):
            Action.finish(self, call.result)  # (by name: see Accept.step)
            return CONTINUE
        return self._exit(vcpu)


class ReportFatalError(Action):
    """TDG.VP.VMCALL<ReportFatalError>: KVM_EXIT_SYSTEM_EVENT type TDX_FATAL with the 16
    GPRs in VCPU_REGS order (tdx_report_fatal_error): RAX = the TD exit's status
    (EXIT_REASON_TDCALL), RSP/RBP 0, R10 = 0, R11 = the leaf, R12 = ``error_code``,
    R13 = ``data_gpa``; ``regs`` {index: value} sets others."""

    kind = "tdx.report_fatal_error"

    def __init__(self, error_code=0, data_gpa=0, regs=None):
        super().__init__()
        self.regs = [0] * 16
        self.regs[0] = T.EXIT_REASON_TDCALL
        for i, v in (regs or {}).items():
            if i not in (4, 5):
                self.regs[i] = v & U64
        self.regs[10] = T.TDX_HYPERCALL_STANDARD
        self.regs[11] = T.TDVMCALL_REPORT_FATAL_ERROR
        self.regs[12] = error_code & U64
        self.regs[13] = data_gpa & U64

    def step(self, vcpu):
        vcpu.system_event_exit(T.KVM_SYSTEM_EVENT_TDX_FATAL, *self.regs)
        self.exits.append(K.KVM_EXIT_SYSTEM_EVENT)
        self.finish(None)
        return EXIT


class _UserExitCall(Action):
    """A TDG.VP.VMCALL that KVM forwards as KVM_EXIT_TDX (tdx_get_quote,
    tdx_setup_event_notify_interrupt): the exit's struct zeroed, ``nr`` the leaf, its ``ret``
    preset SUBFUNC_UNSUPPORTED; on re-entry R10 = run->tdx.unknown.ret (``result``)."""

    def __init__(self):
        super().__init__()
        self._waiting = False

    def _exit(self, vcpu, nr):
        """Write the exit; returns the KVM_EXIT_TDX struct for the leaf's own fields."""
        vcpu.run.exit_reason = K.KVM_EXIT_TDX
        x = _tdx_exit(vcpu)
        ctypes.memset(ctypes.addressof(x), 0, ctypes.sizeof(x))
        x.nr = nr
        x.unknown.ret = T.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED
        self._waiting = True
        self.exits.append(K.KVM_EXIT_TDX)
        return x

    def complete(self, vcpu):
        if self._waiting:
            self._waiting = False
            self.finish(_tdx_exit(vcpu).unknown.ret)


class GetQuote(_UserExitCall):
    """TDG.VP.VMCALL<GetQuote>(gpa, size): the buffer must be shared (else INVALID_OPERAND,
    no exit); KVM_EXIT_TDX with nr = the leaf and the gpa without the shared bit."""

    kind = "tdx.get_quote"

    def __init__(self, gpa, size):
        super().__init__()
        self.gpa = gpa & U64
        self.size = size & U64

    def step(self, vcpu):
        td = vcpu.vm.arch
        if not self.gpa & td.shared_bit:
            return self.finish(T.TDVMCALL_STATUS_INVALID_OPERAND)
        x = self._exit(vcpu, T.TDVMCALL_GET_QUOTE)
        x.get_quote.gpa = self.gpa & ~td.shared_bit
        x.get_quote.size = self.size
        return EXIT


class SetupEventNotifyInterrupt(_UserExitCall):
    """TDG.VP.VMCALL<SetupEventNotifyInterrupt>(vector) (tdx_setup_event_notify_interrupt,
    6.16-6.18): a vector outside 32..255 is INVALID_OPERAND, no exit; else KVM_EXIT_TDX with
    nr = 0x10004 and the vector."""

    kind = "tdx.setup_event_notify_interrupt"

    def __init__(self, vector):
        super().__init__()
        self.vector = vector & U64

    def step(self, vcpu):
        if not 32 <= self.vector <= 255:
            return self.finish(T.TDVMCALL_STATUS_INVALID_OPERAND)
        x = self._exit(vcpu, T.TDVMCALL_SETUP_EVENT_NOTIFY_INTERRUPT)
        x.setup_event_notify.vector = self.vector
        return EXIT


class TdxGuest:
    """``vcpu.guest.tdx``: the TD guest's TDCALLs and TDVMCALLs."""

    def __init__(self, script):
        self.script = script

    def accept(self, gpa, level=0):
        return self.script.add(Accept(gpa, level))

    def release(self, gpa, level=0):
        return self.script.add(Release(gpa, level))

    def map_gpa(self, gpa, size):
        return self.script.add(MapGpaCall(gpa, size))

    def report_fatal_error(self, error_code=0, data_gpa=0, regs=None):
        return self.script.add(ReportFatalError(error_code, data_gpa, regs))

    def get_quote(self, gpa, size):
        return self.script.add(GetQuote(gpa, size))

    def setup_event_notify_interrupt(self, vector):
        return self.script.add(SetupEventNotifyInterrupt(vector))
