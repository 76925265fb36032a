"""arm64 vCPU ioctls: KVM_ARM_VCPU_INIT, KVM_RUN's first-run checks, KVM_GET/SET_ONE_REG.

Sources (arch/arm64/kvm/arm.c, read): ``kvm_arch_vcpu_ioctl_vcpu_init`` (POWER_OFF is
ephemeral), ``kvm_vcpu_set_target`` (target other than GENERIC_V8 -> EINVAL; features
differing from an initialised vCPU's -> EINVAL), ``kvm_vcpu_init_check_features``
(a bit past KVM_VCPU_MAX_FEATURES or any of features[1..6] -> ENOENT; a feature the
system lacks -> EINVAL; one PTRAUTH bit without the other -> EINVAL),
``__kvm_vcpu_set_target`` (every vCPU of a VM has the same features, else EINVAL),
``kvm_arch_vcpu_ioctl_get/set_mpstate`` (RUNNABLE, STOPPED, SUSPENDED; else EINVAL),
``kvm_arch_vcpu_run_pid_change`` (an uninitialised vCPU's KVM_RUN -> ENOEXEC; the first
run maps the vGIC), ``kvm_arch_vcpu_ioctl`` (ONE_REG before init -> ENOEXEC; unknown
-> EINVAL).

The system this models has PSCI 0.2, PMU v3, SVE and pointer authentication, and no
AArch32 EL1 or nested virtualisation (a current server core); ``KVM_ARM_VCPU_FINALIZE``
is not modelled (SVE vCPUs are taken as finalized).
"""

import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user, read_user_at, write_user_at
from kmock.kvm import vcpu as core_vcpu
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

VALID_FEATURES = (1 << A.KVM_VCPU_MAX_FEATURES) - 1
SYSTEM_FEATURES = (1 << A.KVM_ARM_VCPU_POWER_OFF | 1 << A.KVM_ARM_VCPU_PSCI_0_2
                   | 1 << A.KVM_ARM_VCPU_PMU_V3 | 1 << A.KVM_ARM_VCPU_SVE
                   | 1 << A.KVM_ARM_VCPU_PTRAUTH_ADDRESS | 1 << A.KVM_ARM_VCPU_PTRAUTH_GENERIC)
_PTRAUTH = 1 << A.KVM_ARM_VCPU_PTRAUTH_ADDRESS | 1 << A.KVM_ARM_VCPU_PTRAUTH_GENERIC


class Arm64VcpuState:
    """vcpu.arch of an arm64 vCPU."""

    def __init__(self):
        self.initialized = False
        self.features = 0
        #: KVM_MP_STATE_SUSPENDED (set by the VMM); ``vcpu.stopped`` is set with it: the
        #: KVM_RUN waits as kvm_vcpu_suspend's WFI does (no interrupt wakes it here)
        self.suspended = False
        #: the last PSCI CPU_ON's entry point and context id ({"pc", "r0"}), or None
        self.reset_state = None
        #: vcpu_has_run_once: the first KVM_RUN's checks passed
        self.has_run = False
        #: KVM_SET_ONE_REG values by register id
        self.regs = {}


def _vcpu(f):
    f.vm.check_caller()
    return f.vcpu


def check_features(vcpu, init):
    """kvm_vcpu_init_check_features: returns features[0] or raises."""
    features = init.features[0]
    if features & ~VALID_FEATURES or any(init.features[1:]):
        raise oserror(errno.ENOENT)
    if features & ~SYSTEM_FEATURES:
        raise oserror(errno.EINVAL)
    if features & _PTRAUTH and features & _PTRAUTH != _PTRAUTH:
        raise oserror(errno.EINVAL)
    return features


def vcpu_init(f, arg):
    vcpu = _vcpu(f)
    init = copy_from_user(arg, A.kvm_vcpu_init)
    power_off = bool(init.features[0] & 1 << A.KVM_ARM_VCPU_POWER_OFF)
    init.features[0] &= ~(1 << A.KVM_ARM_VCPU_POWER_OFF)
    if init.target != A.KVM_ARM_TARGET_GENERIC_V8:
        raise oserror(errno.EINVAL)
    vm = vcpu.vm
    vmtype = vm.vmtype
    features = check_features(vcpu, init)
    vmtype.vcpu_init_check(vcpu, features)
    arch = vm.arch
    with arch.lock:
        if arch.vcpu_features is not None and arch.vcpu_features != features:
            raise oserror(errno.EINVAL)  # every vCPU of a VM has the same features
        arch.vcpu_features = features
        vcpu.arch.features = features
        vcpu.arch.initialized = True
        # "start in power-off": STOPPED with the POWER_OFF feature, else RUNNABLE (a
        # re-init after a PSCI SYSTEM_OFF/RESET starts the vCPU again)
        vcpu.arch.suspended = False
        vcpu.set_stopped(power_off)
    return 0


def vcpu_get_mp_state(f, arg):
    """kvm_arch_vcpu_ioctl_get_mpstate: RUNNABLE, STOPPED or SUSPENDED."""
    vcpu = _vcpu(f)
    if vcpu.arch.suspended:
        state = K.KVM_MP_STATE_SUSPENDED
    else:
        state = K.KVM_MP_STATE_STOPPED if vcpu.stopped else K.KVM_MP_STATE_RUNNABLE
    copy_to_user(arg, K.kvm_mp_state(state))
    return 0


def vcpu_set_mp_state(f, arg):
    """kvm_arch_vcpu_ioctl_set_mpstate: RUNNABLE, STOPPED (power off) or SUSPENDED;
    any other value is EINVAL."""
    vcpu = _vcpu(f)
    state = copy_from_user(arg, K.kvm_mp_state).mp_state
    if state not in (K.KVM_MP_STATE_RUNNABLE, K.KVM_MP_STATE_STOPPED,
                     K.KVM_MP_STATE_SUSPENDED):
        raise oserror(errno.EINVAL)
    vcpu.arch.suspended = state == K.KVM_MP_STATE_SUSPENDED
    vcpu.set_stopped(state != K.KVM_MP_STATE_RUNNABLE)
    return 0


def vcpu_run(f, arg):
    """KVM_RUN: kvm_arch_vcpu_run_pid_change's checks on the first run, then the core's
    run (pending completion, immediate_exit, the guest)."""
    arch = f.vcpu.arch
    if arch is None or not arch.has_run:
        # the first run (the core's vcpu_run checks the caller again: after the first run
        # that check is its, one check_caller per KVM_RUN)
        vcpu = _vcpu(f)
        arch = vcpu.arch
        with vcpu.mutex:
            if not arch.initialized:
                raise oserror(errno.ENOEXEC)
            if not arch.has_run:
                vcpu.vm.vmtype.first_run(vcpu)
                arch.has_run = True
                vcpu.vm.arch.has_ran_once = True
    return core_vcpu.vcpu_run(f, arg)


def _reg_size(reg_id):
    return 1 << ((reg_id & A.KVM_REG_SIZE_MASK) >> A.KVM_REG_SIZE_SHIFT)


def vcpu_get_one_reg(f, arg):
    vcpu = _vcpu(f)
    if not vcpu.arch.initialized:
        raise oserror(errno.ENOEXEC)
    reg = copy_from_user(arg, A.kvm_one_reg)
    if reg.id & 0xFF00000000000000 != A.KVM_REG_ARM64:
        raise oserror(errno.EINVAL)
    n = _reg_size(reg.id)
    write_user_at(reg.addr, 0, vcpu.arch.regs.get(reg.id, bytes(n)))
    return 0


def vcpu_set_one_reg(f, arg):
    vcpu = _vcpu(f)
    if not vcpu.arch.initialized:
        raise oserror(errno.ENOEXEC)
    reg = copy_from_user(arg, A.kvm_one_reg)
    if reg.id & 0xFF00000000000000 != A.KVM_REG_ARM64:
        raise oserror(errno.EINVAL)
    vcpu.vm.vmtype.one_reg_check(vcpu, reg.id)
    vcpu.arch.regs[reg.id] = read_user_at(reg.addr, 0, _reg_size(reg.id))
    return 0


def vcpu_enable_cap(f, arg):
    _vcpu(f)
    copy_from_user(arg, K.kvm_enable_cap)
    raise oserror(errno.EINVAL)


def vcpu_ioctls():
    return {
        A.KVM_ARM_VCPU_INIT: vcpu_init,
        K.KVM_RUN: vcpu_run,
        A.KVM_GET_ONE_REG: vcpu_get_one_reg,
        A.KVM_SET_ONE_REG: vcpu_set_one_reg,
        K.KVM_ENABLE_CAP: vcpu_enable_cap,
        K.KVM_GET_MP_STATE: vcpu_get_mp_state,
        K.KVM_SET_MP_STATE: vcpu_set_mp_state,
    }
