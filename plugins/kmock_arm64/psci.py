"""``vcpu.guest.psci``: the guest's PSCI calls (an HVC with the function id in x0), as
KVM's PSCI emulation answers them (arch/arm64/kvm/psci.c, 6.13 and later: PSCI 1.3).

Every call is an action whose ``result`` is what the guest reads back in x0 (a signed
PSCI return value, or the version / affinity state):

* ``version()``; ``features(fn)``; ``migrate_info_type()``;
* ``cpu_on(target_mpidr, entry, context_id)``: starts a stopped vCPU (SUCCESS), or
  ALREADY_ON, or INVALID_PARAMS for an affinity no vCPU has; the target's reset state
  (``entry``, ``context_id``) is kept in its ``vcpu.arch.reset_state``;
* ``cpu_off()``: the vCPU stops (KVM_MP_STATE_STOPPED); its KVM_RUN sleeps in the kernel
  until another vCPU's CPU_ON (the script then goes on, as the code at ``entry`` would),
  or a signal (EINTR, KVM_EXIT_INTR);
* ``affinity_info(target_mpidr, lowest_level=0)``: ON, OFF or INVALID_PARAMS;
* ``cpu_suspend()``: a WFI (the vCPU idles in KVM_RUN until it has more to run), SUCCESS;
* ``system_off()``, ``system_reset()``, ``system_reset2(reset_type, cookie)``,
  ``system_off2(off_type=0, cookie=0)``: KVM_RUN returns with KVM_EXIT_SYSTEM_EVENT
  (SHUTDOWN or RESET; ndata 1, data[0] the flags: PSCI_RESET2 / PSCI_OFF2), every vCPU
  of the VM is stopped (kvm_prepare_system_event), and x0 is preloaded with
  INTERNAL_FAILURE for a VMM that would resume the vCPU anyway. The VMM re-initialises
  the vCPUs (KVM_ARM_VCPU_INIT) to reboot;
* ``call(fn, arg1=0, arg2=0, arg3=0)``: any function id (an unknown one is
  NOT_SUPPORTED).

The vCPU's PSCI version (kvm_psci_version) is the VMM's KVM_REG_ARM_PSCI_VERSION, or 1.3
(KVM_ARM_PSCI_LATEST) with the KVM_ARM_VCPU_PSCI_0_2 feature, and 0.1 without it (0.1 has
only CPU_ON and CPU_OFF, under KVM's own function ids; the guest's calls here are 0.2 ids,
so every one is NOT_SUPPORTED). kvm_psci_call dispatches on it: 0.2 answers VERSION 0.2
and has no PSCI_FEATURES; 1.x (kvm_psci_1_x_call) reports 1.<minor> and offers
SYSTEM_RESET2 from 1.1 and SYSTEM_OFF2 from 1.3 (PSCI_FEATURES says so too); below those
minors the calls are NOT_SUPPORTED [U: the minor gates recalled from psci.c 6.13, not
re-read]. ``system_suspend(entry, context_id)``: NOT_SUPPORTED unless the VMM enabled
KVM_CAP_ARM_SYSTEM_SUSPEND; then KVM_RUN returns KVM_EXIT_SYSTEM_EVENT / SUSPEND (ndata 0)
with the guest's registers untouched (x0 = the function id, x1 = entry, x2 = context
id, readable with KVM_GET_ONE_REG): ``result`` is that unchanged x0 (kvm_psci_1_x_call;
the VMM implements the suspend). Guests are AArch64 (no 32-bit narrowing).

A vCPU's MPIDR affinity is its MPIDR_EL1 register (kvm_vcpu_get_mpidr_aff): reset_mpidr's
(arch/arm64/kvm/sys_regs.c: Aff0 = vcpu_id bits 3:0, Aff1 = bits 11:4, Aff2 = bits 19:12)
unless the VMM wrote another with KVM_SET_ONE_REG.
"""

from kmock.errors import check_int
from kmock.kvm.guest import EXIT, HALT, Action
from kmock.uapi import kvm as K
from kmock.uapi import psci as P

from . import regs as arm64_regs

#: MPIDR_HWID_BITMASK (arch/arm64/include/asm/cputype.h): Aff3 and Aff2..Aff0
MPIDR_HWID_BITMASK = 0xFF00FFFFFF
MPIDR_LEVEL_BITS = 8
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1
_SUPPORTED_1_X = frozenset((
    P.PSCI_0_2_FN_PSCI_VERSION, P.PSCI_0_2_FN_CPU_SUSPEND, P.PSCI_0_2_FN64_CPU_SUSPEND,
    P.PSCI_0_2_FN_CPU_OFF, P.PSCI_0_2_FN_CPU_ON, P.PSCI_0_2_FN64_CPU_ON,
    P.PSCI_0_2_FN_AFFINITY_INFO, P.PSCI_0_2_FN64_AFFINITY_INFO,
    P.PSCI_0_2_FN_MIGRATE_INFO_TYPE, P.PSCI_0_2_FN_SYSTEM_OFF, P.PSCI_0_2_FN_SYSTEM_RESET,
    P.PSCI_1_0_FN_PSCI_FEATURES, P.ARM_SMCCC_VERSION_FUNC_ID))
_SYSTEM_SUSPEND = (P.PSCI_1_0_FN_SYSTEM_SUSPEND, P.PSCI_1_0_FN64_SYSTEM_SUSPEND)
PSCI_1_3 = P.PSCI_VERSION(1, 3)
PSCI_0_1 = P.PSCI_VERSION(0, 1)


def mpidr_aff(vcpu_id):
    """kvm_vcpu_get_mpidr_aff of a vCPU whose MPIDR_EL1 is reset_mpidr's."""
    return ((vcpu_id & 0x0F) | ((vcpu_id >> 4) & 0xFF) << 8
            | ((vcpu_id >> 12) & 0xFF) << 16)


def psci_version(vcpu):
    """kvm_psci_version: the VMM's choice or 1.3 with the PSCI 0.2 feature, 0.1 without."""
    features = vcpu.arch.features if vcpu.arch is not None else 0
    return arm64_regs.psci_version(vcpu.vm.arch, features)


def vcpu_affinity(vcpu):
    """kvm_vcpu_get_mpidr_aff: MPIDR_EL1's affinity fields."""
    return vcpu.arch.regs.mpidr() & MPIDR_HWID_BITMASK


def _valid_affinity(affinity):
    return not affinity & ~MPIDR_HWID_BITMASK


def _affinity_mask(level):
    """kvm_psci_affinity_mask: the kernel's AFFINITY_MASK(level) within the HWID bits."""
    if level <= 3:
        return MPIDR_HWID_BITMASK & ~((1 << (level * MPIDR_LEVEL_BITS)) - 1) & _U64
    return 0


def _vcpus(vm):
    return [vm.vcpus[i] for i in sorted(vm.vcpus)]


def _cpu_on(vcpu, target, entry, context_id):
    """kvm_psci_vcpu_on under the target's mp_state_lock (its wake lock here)."""
    if not _valid_affinity(target):
        return P.PSCI_RET_INVALID_PARAMS
    other = next((v for v in _vcpus(vcpu.vm)
                  if vcpu_affinity(v) == target & MPIDR_HWID_BITMASK), None)
    if other is None:
        return P.PSCI_RET_INVALID_PARAMS
    with other.wake:
        if not other.stopped or other.arch.suspended:  # !kvm_arm_vcpu_stopped
            return P.PSCI_RET_ALREADY_ON
        other.arch.reset_state = {"pc": entry & _U64, "r0": context_id & _U64}
        other.arch.reset_pending = True  # KVM_REQ_VCPU_RESET
        other.stopped = False
        other.wake.notify_all()
    return P.PSCI_RET_SUCCESS


def _affinity_info(vcpu, target, level):
    if not _valid_affinity(target):
        return P.PSCI_RET_INVALID_PARAMS
    mask = _affinity_mask(level)
    if not mask:
        return P.PSCI_RET_INVALID_PARAMS
    target &= mask
    matching = 0
    for v in _vcpus(vcpu.vm):
        if vcpu_affinity(v) & mask == target:
            matching += 1
            if not v.stopped or v.arch.suspended:
                return P.PSCI_0_2_AFFINITY_LEVEL_ON
    return P.PSCI_0_2_AFFINITY_LEVEL_OFF if matching else P.PSCI_RET_INVALID_PARAMS


def _system_event(vcpu, event_type, flags):
    """kvm_prepare_system_event: every vCPU stopped, then the exit."""
    for v in _vcpus(vcpu.vm):
        v.arch.suspended = False
        v.set_stopped(True)
    vcpu.system_event_exit(event_type, flags)


class PsciCall(Action):
    """One PSCI call; ``result`` is x0 after it (see the module docstring)."""

    kind = "psci"

    def __init__(self, fn, arg1=0, arg2=0, arg3=0):
        super().__init__()
        self.fn = check_int("fn", fn, 0, _U32)
        self.args = tuple(check_int(name, a, 0, _U64) for name, a in
                          (("arg1", arg1), ("arg2", arg2), ("arg3", arg3)))

    def _describe(self):
        return f"fn {self.fn:#x} args {', '.join(hex(a) for a in self.args)}"

    def step(self, vcpu):
        version = psci_version(vcpu)
        if version == PSCI_0_1:
            return self.finish(P.PSCI_RET_NOT_SUPPORTED)  # kvm_psci_0_1_call: KVM's own ids
        #: kvm_psci_1_x_call's minor; None: kvm_psci_0_2_call
        minor = version & 0xFFFF if version >> 16 == 1 else None
        fn, (a1, a2, a3) = self.fn, self.args
        if fn == P.PSCI_0_2_FN_PSCI_VERSION:
            return self.finish(version)
        if fn == P.PSCI_1_0_FN_PSCI_FEATURES and minor is not None:
            f = a1 & _U32
            if f in _SUPPORTED_1_X or (minor >= 1 and f in (P.PSCI_1_1_FN_SYSTEM_RESET2,
                                                            P.PSCI_1_1_FN64_SYSTEM_RESET2)):
                return self.finish(P.PSCI_RET_SUCCESS)
            if f in _SYSTEM_SUSPEND and vcpu.vm.arch.system_suspend_enabled:
                return self.finish(P.PSCI_RET_SUCCESS)
            if minor >= 3 and f in (P.PSCI_1_3_FN_SYSTEM_OFF2, P.PSCI_1_3_FN64_SYSTEM_OFF2):
                return self.finish(P.PSCI_1_3_OFF_TYPE_HIBERNATE_OFF)
            return self.finish(P.PSCI_RET_NOT_SUPPORTED)
        if fn in _SYSTEM_SUSPEND and minor is not None:
            if not vcpu.vm.arch.system_suspend_enabled:
                return self.finish(P.PSCI_RET_NOT_SUPPORTED)
            if fn == P.PSCI_1_0_FN_SYSTEM_SUSPEND:
                a1, a2 = a1 & _U32, a2 & _U32
            regs = vcpu.arch.regs
            for n, value in enumerate((fn, a1, a2)):
                regs.set_x(n, value)
            vcpu.system_event_exit(K.KVM_SYSTEM_EVENT_SUSPEND)
            self.exits.append(K.KVM_EXIT_SYSTEM_EVENT)
            self.finish(fn)  # x0 unchanged
            return EXIT
        if fn in (P.PSCI_1_1_FN_SYSTEM_RESET2, P.PSCI_1_1_FN64_SYSTEM_RESET2):
            if minor is None or minor < 1:
                return self.finish(P.PSCI_RET_NOT_SUPPORTED)
            if fn == P.PSCI_1_1_FN_SYSTEM_RESET2:
                a1 &= _U32  # kvm_psci_narrow_to_32bit
            reset_type = a1 & _U32
            if (reset_type <= P.PSCI_1_1_RESET_TYPE_SYSTEM_WARM_RESET
                    or reset_type >= P.PSCI_1_1_RESET_TYPE_VENDOR_START):
                return self._system(vcpu, K.KVM_SYSTEM_EVENT_RESET,
                                    K.KVM_SYSTEM_EVENT_RESET_FLAG_PSCI_RESET2)
            return self.finish(P.PSCI_RET_INVALID_PARAMS)
        if fn in (P.PSCI_1_3_FN_SYSTEM_OFF2, P.PSCI_1_3_FN64_SYSTEM_OFF2):
            if minor is None or minor < 3:
                return self.finish(P.PSCI_RET_NOT_SUPPORTED)
            if fn == P.PSCI_1_3_FN_SYSTEM_OFF2:
                a1, a2 = a1 & _U32, a2 & _U32
            if (a1 and a1 != P.PSCI_1_3_OFF_TYPE_HIBERNATE_OFF) or a2:
                return self.finish(P.PSCI_RET_INVALID_PARAMS)
            return self._system(vcpu, K.KVM_SYSTEM_EVENT_SHUTDOWN,
                                K.KVM_SYSTEM_EVENT_SHUTDOWN_FLAG_PSCI_OFF2)
        if fn in (P.PSCI_0_2_FN_CPU_SUSPEND, P.PSCI_0_2_FN64_CPU_SUSPEND):
            self.finish(P.PSCI_RET_SUCCESS)
            return HALT  # kvm_psci_vcpu_suspend: kvm_vcpu_wfi
        if fn == P.PSCI_0_2_FN_CPU_OFF:
            vcpu.set_stopped(True)  # kvm_arm_vcpu_power_off; the run sleeps (kmock.kvm.guest)
            return self.finish(P.PSCI_RET_SUCCESS)
        if fn in (P.PSCI_0_2_FN_CPU_ON, P.PSCI_0_2_FN64_CPU_ON):
            if fn == P.PSCI_0_2_FN_CPU_ON:
                a1, a2, a3 = a1 & _U32, a2 & _U32, a3 & _U32
            return self.finish(_cpu_on(vcpu, a1, a2, a3))
        if fn in (P.PSCI_0_2_FN_AFFINITY_INFO, P.PSCI_0_2_FN64_AFFINITY_INFO):
            if fn == P.PSCI_0_2_FN_AFFINITY_INFO:
                a1, a2 = a1 & _U32, a2 & _U32
            return self.finish(_affinity_info(vcpu, a1, a2))
        if fn == P.PSCI_0_2_FN_MIGRATE_INFO_TYPE:
            return self.finish(P.PSCI_0_2_TOS_MP)
        if fn == P.PSCI_0_2_FN_SYSTEM_OFF:
            return self._system(vcpu, K.KVM_SYSTEM_EVENT_SHUTDOWN, 0)
        if fn == P.PSCI_0_2_FN_SYSTEM_RESET:
            return self._system(vcpu, K.KVM_SYSTEM_EVENT_RESET, 0)
        return self.finish(P.PSCI_RET_NOT_SUPPORTED)

    def _system(self, vcpu, event_type, flags):
        _system_event(vcpu, event_type, flags)
        self.exits.append(K.KVM_EXIT_SYSTEM_EVENT)
        self.finish(P.PSCI_RET_INTERNAL_FAILURE)  # x0, should the VMM resume the vCPU
        return EXIT


class PsciGuest:
    """``vcpu.guest.psci``."""

    def __init__(self, script):
        self.script = script

    def call(self, fn, arg1=0, arg2=0, arg3=0):
        return self.script.add(PsciCall(fn, arg1, arg2, arg3))

    def version(self):
        return self.call(P.PSCI_0_2_FN_PSCI_VERSION)

    def features(self, fn):
        return self.call(P.PSCI_1_0_FN_PSCI_FEATURES, fn)

    def migrate_info_type(self):
        return self.call(P.PSCI_0_2_FN_MIGRATE_INFO_TYPE)

    def cpu_on(self, target_mpidr, entry, context_id=0):
        return self.call(P.PSCI_0_2_FN64_CPU_ON, target_mpidr, entry, context_id)

    def cpu_off(self):
        return self.call(P.PSCI_0_2_FN_CPU_OFF)

    def cpu_suspend(self, power_state=0, entry=0, context_id=0):
        return self.call(P.PSCI_0_2_FN64_CPU_SUSPEND, power_state, entry, context_id)

    def affinity_info(self, target_mpidr, lowest_level=0):
        return self.call(P.PSCI_0_2_FN64_AFFINITY_INFO, target_mpidr, lowest_level)

    def system_off(self):
        return self.call(P.PSCI_0_2_FN_SYSTEM_OFF)

    def system_reset(self):
        return self.call(P.PSCI_0_2_FN_SYSTEM_RESET)

    def system_reset2(self, reset_type=0, cookie=0):
        return self.call(P.PSCI_1_1_FN64_SYSTEM_RESET2, reset_type, cookie)

    def system_suspend(self, entry, context_id=0):
        return self.call(P.PSCI_1_0_FN64_SYSTEM_SUSPEND, entry, context_id)

    def system_off2(self, off_type=0, cookie=0):
        return self.call(P.PSCI_1_3_FN64_SYSTEM_OFF2, off_type, cookie)
