"""``vcpu.guest.snp``: what an SNP guest does that KVM or the RMP sees.

* ``pvalidate(gpa, validate=True, page_size=4096)``: PVALIDATE; ``result`` is its return
  code (0, 255 no update, 6 FAIL_SIZEMISMATCH, 1 FAIL_INPUT). The page is first faulted
  in as a private access (an NPF KVM resolves, or a KVM_EXIT_MEMORY_FAULT); a 4K request
  on a 2M entry takes the NPF(SIZEM) path: KVM PSMASHes the entry (sev_handle_rmp_fault)
  and the guest retries. ``action.npfs`` lists the NPFs taken.
* ``psc_msr(gpa, private)``: the GHCB MSR page-state change: one KVM_EXIT_HYPERCALL
  (KVM_HC_MAP_GPA_RANGE, one page); ``result`` is the GHCB MSR response.
* ``psc(entries)``: the GHCB NAE page-state change of up to 253 ``(gfn, op, page_size)``
  entries (op: True = private, False = shared, "psmash", "unsmash" or an int); adjacent
  entries coalesce into one exit (kmock_snp.psc); ``result`` is sw_exit_info_2 and
  ``action.desc`` the guest's buffer (hdr.cur_entry).
* ``terminate(reason_set=0, reason_code=0)``: the GHCB MSR termination request:
  KVM_EXIT_SYSTEM_EVENT type SEV_TERM, data[0] = the MSR. The guest runs nothing after.
* ``ghcb_msr(value)``: any GHCB MSR protocol request, answered as
  sev_handle_vmgexit_msr_protocol does (SEV_INFO, CPUID, HV features, preferred /
  registered GHCB GPA, PSC, termination; an unknown request leaves the MSR as it was);
  ``result`` is the MSR the guest reads back. AP reset hold: KVM_EXIT_AP_RESET_HOLD
  without an in-kernel LAPIC (with one, the wait for SIPI is not modelled).

C-bit accesses are the core's ``vcpu.guest.read/write(gpa, ..., private=True)``.
"""

import errno

from kmock.kvm.guest import EXIT, Action, halts_in_kernel, hypercall_exit
from kmock.kvm.stage2 import MemoryFault, faultin
from kmock.kvm.x86_state import cpuid_entry
from kmock.kvm.x86_state import state as x86_state
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from . import psc as P

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
HUGE = 2 << 20
_OPS = {True: S.VMGEXIT_PSC_OP_PRIVATE, False: S.VMGEXIT_PSC_OP_SHARED,
        "psmash": S.VMGEXIT_PSC_OP_PSMASH, "unsmash": S.VMGEXIT_PSC_OP_UNSMASH}


def terminate_exit(vcpu, reason_set, reason_code):
    """The guest's termination request: SEV_TERM with the GHCB MSR; nothing runs after."""
    return terminate_msr(vcpu, S.ghcb_sev_term_reason(reason_set, reason_code))


def terminate_msr(vcpu, msr):
    """sev_handle_vmgexit_msr_protocol's out_terminate: KVM_EXIT_SYSTEM_EVENT SEV_TERM,
    ndata 1, data[0] = the GHCB MSR as the guest wrote it; the guest runs nothing after."""
    vcpu.system_event_exit(S.KVM_SYSTEM_EVENT_SEV_TERM, msr)
    vcpu.arch.terminated = True
    script = vcpu.guest
    script.pc += 1  # the current action stays in the history; what follows never runs
    script.clear()
    script.pc -= 1
    return msr


_EXIT_HYPERCALL = K.KVM_EXIT_HYPERCALL
_PSC_MSR, _PSC_MSR_COMPLETE = P.psc_msr, P.psc_msr_complete  # (no module look-up per call)
_PG_SIZE_2M, _PG_SIZE_4K = S.RMP_PG_SIZE_2M, S.RMP_PG_SIZE_4K


def _hypercall_exit(vcpu, hc):
    """snp_begin_psc_msr / snp_begin_psc write exit_reason, nr, ret = 0 and args[0..2]:
    ``hypercall.flags`` keeps whatever kvm_run held (sev.c; ret is zeroed since 9a1dfeff
    "KVM: x86: clear vcpu->run->hypercall.ret before exiting for KVM_EXIT_HYPERCALL",
    6.14, because QEMU <= 9.2 never set it)."""
    hypercall_exit(vcpu, hc.nr, hc.gpa, hc.npages, hc.attrs)


_MAP_GPA_RANGE_BIT = 1 << K.KVM_HC_MAP_GPA_RANGE


def _hypercall_enabled(vm):
    return bool(vm.hypercall_exit_enabled & _MAP_GPA_RANGE_BIT)


class Pvalidate(Action):
    kind = "pvalidate"

    def __init__(self, gpa, validate, page_size):
        super().__init__()
        if page_size not in (PAGE_SIZE, HUGE):
            raise ValueError("page_size must be 4096 or 2M")
        self.gpa = gpa
        self.validate = bool(validate)
        self.page_size = page_size
        self.npfs = []

    def _describe(self):
        return f"gpa {self.gpa:#x} {'validate' if self.validate else 'rescind'} {self.page_size >> 10}K"

    def step(self, vcpu):
        vm = vcpu.vm
        sev = vm.arch
        m = sev.machine
        gpa = self.gpa
        size = _PG_SIZE_2M if self.page_size == HUGE else _PG_SIZE_4K
        if gpa % self.page_size:
            return self.finish(S.PVALIDATE_FAIL_INPUT)
        gfn = gpa >> PAGE_SHIFT
        stage2 = vm.stage2  # (what vm.stage2_lookup calls: one call less per lookup)
        with vm.guest_access():
            mapped = stage2.lookup(gfn)
            if mapped is None or not mapped[1]:
                # the NPF on the gpa: KVM maps its page (the RMP entry decides the size)
                segs = faultin(vm, gpa, gpa + PAGE_SIZE, True, False, want_data=False)
                mapped = stage2.lookup(gfn)
                if not segs or segs[0].kind != "gmem" or mapped is None:
                    raise MemoryFault(errno.EFAULT, gfn, True)
            pfn = mapped[0]
            rmp = m.rmp
            lock = m.lock
            lock.acquire()
            try:
                for _ in range(2):
                    rc = rmp.pvalidate(pfn, gpa, sev.asid, self.validate, size)
                    if not isinstance(rc, tuple):
                        return self.finish(rc)
                    self.npfs.append(rc)
                    if not rc.code & S.PFERR_GUEST_SIZEM_MASK:
                        break
                    # sev_handle_rmp_fault: PSMASH the 2M entry and zap the 2M range; the
                    # retry faults the page back in at 4K (kmock's stage-2 leaf already)
                    rmp.psmash(pfn - pfn % 512)
            finally:
                lock.release()
        vm.kernel.violations.record(
            "rmp_npf", f"PVALIDATE: nested page fault (error code {rc.code:#x}): {rc.reason}; "
            f"{rc.entry}", vm=vm, vcpu=vcpu.id, gpa=gpa, entry=str(rc.entry),
            error_code=rc.code)
        raise MemoryFault(errno.EFAULT, gfn, True)


class PscMsr(Action):
    kind = "psc_msr"

    def __init__(self, gpa, private):
        super().__init__()
        self.gpa = gpa
        self.private = bool(private)
        self.msr = S.ghcb_msr_psc_req(gpa >> PAGE_SHIFT, S.SNP_PAGE_STATE_PRIVATE if private
                                      else S.SNP_PAGE_STATE_SHARED)
        self._waiting = False

    def _describe(self):
        return f"gpa {self.gpa:#x} {'private' if self.private else 'shared'}"

    def step(self, vcpu):
        # (_hypercall_enabled(vcpu.vm), inlined: one call less per page-state change)
        enabled = bool(vcpu.vm.hypercall_exit_enabled & _MAP_GPA_RANGE_BIT)
        out = _PSC_MSR(self.msr, hypercall_exit_enabled=enabled)
        if out.exit is None:
            return self.finish(out.response)
        _hypercall_exit(vcpu, out.exit)
        self._waiting = True
        self.exits.append(_EXIT_HYPERCALL)
        return EXIT

    def complete(self, vcpu):
        if self._waiting:
            self._waiting = False
            self.finish(_PSC_MSR_COMPLETE(vcpu.run_hypercall.ret))


class Psc(Action):
    kind = "psc"

    def __init__(self, entries=None, desc=None):
        super().__init__()
        if desc is None:
            items = []
            for e in entries:
                gfn, op, size = e[0], e[1], e[2] if len(e) > 2 else PAGE_SIZE
                op = _OPS.get(op, op) if not isinstance(op, int) or isinstance(op, bool) else op
                items.append((gfn, op, int(size == HUGE or size == 1)) + tuple(e[3:]))
            desc = P.psc_desc(items)
        self.desc = desc
        self._psc = None

    def _describe(self):
        return f"entries {self.desc.hdr.cur_entry}..{self.desc.hdr.end_entry}"

    def step(self, vcpu):
        if self._psc is None:
            self._psc = P.NaePsc(self.desc, hypercall_exit_enabled=_hypercall_enabled(vcpu.vm))
        psc = self._psc
        if psc.done:
            return self.finish(psc.result)
        _hypercall_exit(vcpu, psc.exit)
        self.exits.append(K.KVM_EXIT_HYPERCALL)
        return EXIT

    def complete(self, vcpu):
        """The VMM answered the exit; the next range (if any) exits on this KVM_RUN."""
        psc = self._psc
        if psc is not None and not psc.done:
            psc.complete(vcpu.run_hypercall.ret)
            if psc.done:
                self.finish(psc.result)


# GHCB MSR protocol requests and responses (arch/x86/include/asm/sev-common.h)
GHCB_MSR_SEV_INFO_REQ = 0x002
GHCB_MSR_SEV_INFO_RESP = 0x001
GHCB_MSR_CPUID_REQ = 0x004
GHCB_MSR_CPUID_RESP = 0x005
GHCB_MSR_AP_RESET_HOLD_REQ = 0x006
GHCB_MSR_AP_RESET_HOLD_RESP = 0x007
GHCB_MSR_PREF_GPA_REQ = 0x010
GHCB_MSR_PREF_GPA_RESP = 0x011
GHCB_MSR_PREF_GPA_NONE = (1 << 52) - 1
GHCB_MSR_REG_GPA_REQ = 0x012
GHCB_MSR_REG_GPA_RESP = 0x013
GHCB_MSR_GPA_VALUE_MASK = (1 << 52) - 1  # GHCBData[63:12]
GHCB_MSR_HV_FT_REQ = 0x080
GHCB_MSR_HV_FT_RESP = 0x081
#: GHCB_HV_FT_SUPPORTED (sev.c): GHCB_HV_FT_SNP | GHCB_HV_FT_SNP_AP_CREATION
GHCB_HV_FT_SUPPORTED = 0b11
#: GHCB_VERSION_MIN (sev.c): the lowest protocol version KVM reports
GHCB_VERSION_MIN = 1
_INFO = (1 << 12) - 1
_U64 = (1 << 64) - 1


def ghcb_sev_info(max_version, min_version, cbit):
    """GHCB_MSR_SEV_INFO(max, min, cbit)."""
    return ((max_version & 0xFFFF) << 48 | (min_version & 0xFFFF) << 32 | (cbit & 0xFF) << 24
            | GHCB_MSR_SEV_INFO_RESP)


def _cpuid_value(vcpu, fn, reg):
    """The CPUID intercept's answer for leaf ``fn``, subleaf 0: the vCPU's KVM_SET_CPUID2
    entry, zeros when it has none (kvm_cpuid for an AMD guest; the out-of-range rule of
    Intel-compatible vendors is not modelled)."""
    e = cpuid_entry(x86_state(vcpu).cpuid, fn, 0)
    return e[3 + reg] if e is not None else 0


class GhcbMsr(PscMsr):
    """The guest writes ``value`` to the GHCB MSR and VMGEXITs: KVM's
    sev_handle_vmgexit_msr_protocol (sev.c, 6.18). ``result`` is the GHCB MSR the guest
    reads back, or the MSR written into a SEV_TERM exit's data[0]."""

    kind = "ghcb_msr"

    def __init__(self, value):
        Action.__init__(self)
        self.msr = value & _U64
        self.private = None
        self._waiting = False

    def _describe(self):
        return f"{self.msr:#x}"

    def step(self, vcpu):
        msr = self.msr
        info = msr & _INFO
        sev = vcpu.vm.arch
        if info == S.GHCB_MSR_PSC_REQ:
            return PscMsr.step(self, vcpu)
        if info == S.GHCB_MSR_TERM_REQ:
            self.exits.append(K.KVM_EXIT_SYSTEM_EVENT)
            self.finish(terminate_msr(vcpu, msr))
            return EXIT
        if info == GHCB_MSR_SEV_INFO_REQ:
            return self.finish(ghcb_sev_info(sev.ghcb_version, GHCB_VERSION_MIN,
                                             vcpu.vm.kernel.setting("sev_enc_bit")))
        if info == GHCB_MSR_CPUID_REQ:
            fn, reg = msr >> 32, msr >> 30 & 3
            value = _cpuid_value(vcpu, fn, reg) & 0xFFFFFFFF
            return self.finish(value << 32 | (msr & ((1 << 32) - 1) & ~_INFO)
                               | GHCB_MSR_CPUID_RESP)
        if info == GHCB_MSR_HV_FT_REQ:
            return self.finish(GHCB_HV_FT_SUPPORTED << 12 | GHCB_MSR_HV_FT_RESP)
        if info == GHCB_MSR_PREF_GPA_REQ:  # (non-SNP guests terminate: not reachable here)
            return self.finish(GHCB_MSR_PREF_GPA_NONE << 12 | GHCB_MSR_PREF_GPA_RESP)
        if info == GHCB_MSR_REG_GPA_REQ:
            gfn = msr >> 12 & GHCB_MSR_GPA_VALUE_MASK
            vcpu.arch.ghcb_registered_gpa = gfn << 12
            return self.finish(gfn << 12 | GHCB_MSR_REG_GPA_RESP)
        if info == GHCB_MSR_AP_RESET_HOLD_REQ:
            return self._ap_reset_hold(vcpu)
        return self.finish(msr)  # unknown request: the MSR is left as it was

    def _ap_reset_hold(self, vcpu):
        """kvm_emulate_ap_reset_hold -> __kvm_emulate_halt(AP_RESET_HOLD): without an
        in-kernel LAPIC, KVM_EXIT_AP_RESET_HOLD; the GHCB MSR is preset to the response
        with result 0 (no SIPI) either way. The in-kernel LAPIC's wait for INIT/SIPI
        (mp_state AP_RESET_HOLD, sev_vcpu_deliver_sipi_vector's result 1) is not
        modelled."""
        if halts_in_kernel(vcpu):
            raise NotImplementedError("GHCB MSR AP reset hold with an in-kernel LAPIC "
                                      "(the wait for SIPI) is not modelled")
        vcpu.run.exit_reason = K.KVM_EXIT_AP_RESET_HOLD
        self.exits.append(K.KVM_EXIT_AP_RESET_HOLD)
        self.finish(GHCB_MSR_AP_RESET_HOLD_RESP)
        return EXIT


class Terminate(Action):
    kind = "terminate"

    def __init__(self, reason_set=0, reason_code=0):
        super().__init__()
        self.reason_set = reason_set
        self.reason_code = reason_code

    def step(self, vcpu):
        self.exits.append(K.KVM_EXIT_SYSTEM_EVENT)
        self.finish(terminate_exit(vcpu, self.reason_set, self.reason_code))
        return EXIT


class SnpGuest:
    """``vcpu.guest.snp``."""

    def __init__(self, script):
        self.script = script

    def pvalidate(self, gpa, validate=True, page_size=PAGE_SIZE):
        return self.script.add(Pvalidate(gpa, validate, page_size))

    def psc_msr(self, gpa, private):
        return self.script.add(PscMsr(gpa, private))

    def psc(self, entries=None, desc=None):
        return self.script.add(Psc(entries, desc))

    def terminate(self, reason_set=0, reason_code=0):
        return self.script.add(Terminate(reason_set, reason_code))

    def ghcb_msr(self, value):
        return self.script.add(GhcbMsr(value))
