"""``vcpu.guest.pkvm``: what a protected guest asks of the hypervisor, as script actions.

Documentation/virt/kvm/arm/hypercalls.rst describes the calls (HVC64, function ID in
X0, arguments in X1..X3, the result in X0):

``hyp_meminfo()``
    ARM_SMCCC_KVM_FUNC_HYP_MEMINFO: the protection granule (4096 here). X1..X3 must
    be zero (INVALID_PARAMETER). Answered by the hypervisor: no exit.
``mem_share(ipa)`` / ``mem_unshare(ipa)``
    ARM_SMCCC_KVM_FUNC_MEM_SHARE / _UNSHARE of the granule at ``ipa`` (aligned; X2,
    X3 zero). The hypervisor checks and performs the ownership change first (share:
    a page the guest owns becomes shared with the host; unshare: back). A bad
    argument, a page already in the asked state, or an IPA outside guest_memfd
    memory gets INVALID_PARAMETER with no exit. Then, because the VMM owns
    guest_memfd's shared/private state, the call exits to it as KVM_EXIT_HYPERCALL
    (``nr`` = the function ID, ``flags`` = 0 for HVC, as arm64 forwards SMCCC calls
    to userspace); the VMM reads X1 with KVM_GET_ONE_REG (kmock also puts the IPA
    in ``hypercall.args[0]``), converts the page and re-enters KVM_RUN. The call
    completes then, with X0 as the VMM left it (SUCCESS unless it wrote X0).
``system_off()`` / ``system_reset()``
    PSCI SYSTEM_OFF / SYSTEM_RESET: KVM_EXIT_SYSTEM_EVENT. pKVM cannot reset a
    protected VM and repaints SYSTEM_RESET as SYSTEM_OFF (Android's "KVM: arm64:
    Handle PSCI for protected VMs"), so both exit with KVM_SYSTEM_EVENT_SHUTDOWN.

The results are X0 as a signed 64-bit value (SMCCC_RET_* are negative).
"""

import ctypes

from kmock.kvm.guest import CONTINUE, EXIT, Action
from kmock.uapi import kvm as K

from . import ownership as O
from . import uapi as A

PAGE_SIZE = 4096
U64 = (1 << 64) - 1


def _signed(v):
    return ctypes.c_int64(v & U64).value


# [guide:action]
class _SmcccCall(Action):
    """An HVC from the protected guest: X0 = function ID, X1..X3 = arguments."""

    func_id = 0

    def __init__(self, *args):
        super().__init__()
        if len(args) > 3:
            raise ValueError("an SMCCC call takes at most 3 arguments here (X1..X3)")
        self.args = tuple(a & U64 for a in args) + (0,) * (3 - len(args))
        self.waiting = False

    def finish(self, result):
        self.result, self.done = result, True
        return CONTINUE

    def step(self, vcpu):
        regs = vcpu.arch
        regs.x[0] = self.func_id
        regs.x[1:4] = self.args
        ret = self.hypervisor(vcpu)
        if ret is not None:  # answered at EL2: the guest continues, no exit
            regs.x[0] = ret & U64
            return self.finish(_signed(regs.x[0]))
        regs.x[0] = A.SMCCC_RET_SUCCESS
        run = vcpu.run
        run.exit_reason = K.KVM_EXIT_HYPERCALL
        hc = run.hypercall
        hc.nr = self.func_id
        hc.args[0] = self.args[0]
        hc.ret = 0
        hc.flags = 0  # HVC, not SMC
        self.waiting = True
        self.exits.append(K.KVM_EXIT_HYPERCALL)
        return EXIT  # KVM_RUN returns 0; the action completes on the next KVM_RUN

    def complete(self, vcpu):
        """The VMM re-entered KVM_RUN: the guest sees X0 as the VMM left it."""
        if self.waiting:
            self.waiting = False
            self.finish(_signed(vcpu.arch.x[0]))
# [/guide:action]

    def hypervisor(self, vcpu):
        """What EL2 does: an SMCCC return value (no exit), or None to exit to the VMM."""
        raise NotImplementedError


class HypMeminfo(_SmcccCall):
    kind = "hyp_meminfo"
    func_id = A.ARM_SMCCC_VENDOR_HYP_KVM_HYP_MEMINFO_FUNC_ID

    def hypervisor(self, vcpu):
        if any(self.args):
            return A.SMCCC_RET_INVALID_PARAMETER
        return PAGE_SIZE


class _MemShareCall(_SmcccCall):
    #: the frame state the call starts from, and the one it leaves
    before = ()
    after = O.HOST

    def hypervisor(self, vcpu):
        ipa, x2, x3 = self.args
        if ipa & (PAGE_SIZE - 1) or x2 or x3:
            return A.SMCCC_RET_INVALID_PARAMETER
        vm = vcpu.vm
        pvm = vm.arch
        pfn = pvm.frame_of(vm, ipa >> 12)
        if pfn is None:
            return A.SMCCC_RET_INVALID_PARAMETER  # not guest_memfd memory of this VM
        with pvm.owner.lock:
            if pvm.owner.state(pfn) not in self.before:
                return A.SMCCC_RET_INVALID_PARAMETER  # -EPERM at EL2
            pvm.owner.set(pfn, 1, self.after)
        return None


class MemShare(_MemShareCall):
    kind = "mem_share"
    func_id = A.ARM_SMCCC_VENDOR_HYP_KVM_MEM_SHARE_FUNC_ID
    before = (O.HOST, O.GUEST)  # a page not touched yet is donated, then shared
    after = O.SHARED


class MemUnshare(_MemShareCall):
    kind = "mem_unshare"
    func_id = A.ARM_SMCCC_VENDOR_HYP_KVM_MEM_UNSHARE_FUNC_ID
    before = (O.SHARED,)
    after = O.GUEST


# [guide:system_event]
class _Psci(Action):
    kind = "psci"
    func_id = 0

    def step(self, vcpu):
        vcpu.arch.x[0] = self.func_id
        # kvm_prepare_system_event(vcpu, KVM_SYSTEM_EVENT_SHUTDOWN, 0): ndata 1, flags 0
        vcpu.system_event_exit(A.KVM_SYSTEM_EVENT_SHUTDOWN, 0)
        self.exits.append(K.KVM_EXIT_SYSTEM_EVENT)
        self.result, self.done = None, True
        return EXIT
# [/guide:system_event]


class SystemOff(_Psci):
    kind = "system_off"
    func_id = A.PSCI_0_2_FN_SYSTEM_OFF


class SystemReset(_Psci):
    """Repainted as SYSTEM_OFF for a protected VM."""

    kind = "system_reset"
    func_id = A.PSCI_0_2_FN_SYSTEM_RESET


# [guide:namespace]
class PkvmGuest:
    """The ``vcpu.guest.pkvm`` namespace (VmType.guest_actions)."""

    def __init__(self, script):
        self.script = script

    def hyp_meminfo(self, *args):
        return self.script.add(HypMeminfo(*args))

    def mem_share(self, ipa, *more):
        return self.script.add(MemShare(ipa, *more))
# [/guide:namespace]

    def mem_unshare(self, ipa, *more):
        return self.script.add(MemUnshare(ipa, *more))

    def system_off(self):
        return self.script.add(SystemOff())

    def system_reset(self):
        return self.script.add(SystemReset())


__all__ = ["PkvmGuest", "HypMeminfo", "MemShare", "MemUnshare", "SystemOff", "SystemReset"]
