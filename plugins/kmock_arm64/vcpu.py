"""arm64 vCPU ioctls: KVM_ARM_VCPU_INIT, KVM_RUN's first-run checks, KVM_GET/SET_ONE_REG.

Sources (arch/arm64/kvm/arm.c, read): ``kvm_arch_vcpu_ioctl_vcpu_init`` (POWER_OFF is
ephemeral), ``kvm_vcpu_set_target`` (target other than GENERIC_V8 -> EINVAL; features
differing from an initialised vCPU's -> EINVAL), ``kvm_vcpu_init_check_features``
(a bit past KVM_VCPU_MAX_FEATURES or any of features[1..6] -> ENOENT; a feature the
system lacks -> EINVAL; one PTRAUTH bit without the other -> EINVAL),
``__kvm_vcpu_set_target`` (every vCPU of a VM has the same features, else EINVAL),
``kvm_arch_vcpu_ioctl_get/set_mpstate`` (RUNNABLE, STOPPED, SUSPENDED; else EINVAL),
``kvm_arch_vcpu_run_pid_change`` (an uninitialised vCPU's KVM_RUN -> ENOEXEC; an SVE
vCPU not finalized -> EPERM; the first run maps the vGIC), ``kvm_arch_vcpu_ioctl``
(ONE_REG, KVM_GET_REG_LIST, KVM_GET/SET_VCPU_EVENTS and KVM_ARM_VCPU_FINALIZE before
init -> ENOEXEC, checked before the argument is read; KVM_GET_REG_LIST of an SVE vCPU
not finalized -> EPERM, a too small ``n`` -> E2BIG with ``n`` written back; unknown ->
EINVAL), ``kvm_arm_vcpu_finalize`` (reset.c: a feature other than SVE, or SVE on a
vCPU without it -> EINVAL; twice -> EPERM), ``kvm_arm_vcpu_set_events`` (reserved or
padding bytes -> EINVAL; an SError ESR beyond ISS bits 24:0 -> EINVAL).

The system this models has PSCI 0.2, PMU v3, SVE and pointer authentication, RAS, and
no AArch32 EL0/EL1 or nested virtualisation (a current server core). Registers:
kmock_arm64.regs.
"""

import ctypes
import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user, read_user_at, write_user_at
from kmock.kvm.eventfds import deliver_irqfds
from kmock.kvm.vcpu import vcpu_run as core_vcpu_run
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from . import vcpu_attr
from .regs import SVE_VQS, Registers

VALID_FEATURES = (1 << A.KVM_VCPU_MAX_FEATURES) - 1
SYSTEM_FEATURES = (1 << A.KVM_ARM_VCPU_POWER_OFF | 1 << A.KVM_ARM_VCPU_PSCI_0_2
                   | 1 << A.KVM_ARM_VCPU_PMU_V3 | 1 << A.KVM_ARM_VCPU_SVE
                   | 1 << A.KVM_ARM_VCPU_PTRAUTH_ADDRESS | 1 << A.KVM_ARM_VCPU_PTRAUTH_GENERIC)
_PTRAUTH = 1 << A.KVM_ARM_VCPU_PTRAUTH_ADDRESS | 1 << A.KVM_ARM_VCPU_PTRAUTH_GENERIC


class Arm64VcpuState:
    """vcpu.arch of an arm64 vCPU."""

    def __init__(self, vcpu_id=0, mpidr_aff=0):
        self.initialized = False
        self.features = 0
        #: KVM_MP_STATE_SUSPENDED (set by the VMM); ``vcpu.stopped`` is set with it: the
        #: KVM_RUN waits as kvm_vcpu_suspend's WFI does (no interrupt wakes it here)
        self.suspended = False
        #: the last PSCI CPU_ON's entry point and context id ({"pc", "r0"}), or None
        self.reset_state = None
        #: KVM_REQ_VCPU_RESET: a CPU_ON's reset not applied yet (the next KVM_RUN or
        #: register access applies it)
        self.reset_pending = False
        #: vcpu_has_run_once: the first KVM_RUN's checks passed
        self.has_run = False
        #: the register file (kmock_arm64.regs)
        self.regs = Registers(vcpu_id, mpidr_aff)
        #: SErrors / external aborts the VMM injected (KVM_SET_VCPU_EVENTS), in order
        self.injected = []
        #: HCR_EL2.VSE: an SError pending, and its ESR (None: without one)
        self.serror_pending = False
        self.serror_esr = None
        #: HCR_EL2.VI / VF as KVM_IRQ_LINE (type CPU) set them: {KVM_ARM_IRQ_CPU_*: level}
        self.irq_lines = {}
        #: vcpu->arch.pmu: KVM_ARM_VCPU_PMU_V3_INIT done, its overflow IRQ (None: unset)
        self.pmu_created = False
        self.pmu_irq = None
        #: vcpu->arch.steal.base (KVM_ARM_VCPU_PVTIME_IPA)
        self.steal_base = (1 << 64) - 1

    def apply_pending_reset(self):
        """kvm_check_request(KVM_REQ_VCPU_RESET) -> kvm_reset_vcpu."""
        if self.reset_pending:
            self.reset_pending = False
            self.regs.reset(self.reset_state)


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
        state = vcpu.arch
        state.features = features
        state.initialized = True
        regs = state.regs
        if not regs.sve_finalized:  # kvm_reset_vcpu: kvm_vcpu_enable_sve
            regs.has_sve = bool(features & 1 << A.KVM_ARM_VCPU_SVE)
            regs.sve_max_vq = max(SVE_VQS)
        regs.reset(state.reset_state if state.reset_pending else None)
        state.reset_pending = False
        state.serror_pending, state.serror_esr = False, None
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
    vcpu = f.vcpu  # (a typed Vcpu when compiled, vcpu.pxd: its fields are member loads)
    arch = vcpu.arch
    if arch is None or not arch.has_run:
        # the first run (the core's vcpu_run checks the caller again: after the first run
        # that check is its, one check_caller per KVM_RUN)
        vcpu = _vcpu(f)
        arch = vcpu.arch
        with vcpu.mutex:
            if not arch.initialized:
                raise oserror(errno.ENOEXEC)
            if arch.regs.has_sve and not arch.regs.sve_finalized:
                raise oserror(errno.EPERM)  # !kvm_arm_vcpu_is_finalized
            if not arch.has_run:
                vcpu.vm.vmtype.first_run(vcpu)
                arch.has_run = True
                vcpu.vm.arch.has_ran_once = True
    if arch.reset_pending:
        with vcpu.mutex:
            arch.apply_pending_reset()  # check_vcpu_requests: KVM_REQ_VCPU_RESET
    # the irqfds signalled since: injected before the guest can look (kmock.kvm.eventfds)
    deliver_irqfds(vcpu.vm)
    return core_vcpu_run(f, arg)


def _initialized(f):
    vcpu = _vcpu(f)
    if not vcpu.arch.initialized:
        raise oserror(errno.ENOEXEC)
    return vcpu


def vcpu_get_one_reg(f, arg):
    vcpu = _initialized(f)
    reg = copy_from_user(arg, A.kvm_one_reg)
    with vcpu.mutex:
        arch = vcpu.arch
        arch.apply_pending_reset()
        data = arch.regs.get(vcpu.vm.arch, arch.features, reg.id)
    write_user_at(reg.addr, 0, data)
    return 0


def vcpu_set_one_reg(f, arg):
    vcpu = _initialized(f)
    reg = copy_from_user(arg, A.kvm_one_reg)
    with vcpu.mutex:
        arch = vcpu.arch
        arch.apply_pending_reset()
        vcpu.vm.vmtype.one_reg_check(vcpu, reg.id)
        arch.regs.set(vcpu.vm.arch, arch.features, reg.id, reg.addr)
    return 0


def vcpu_get_reg_list(f, arg):
    """KVM_GET_REG_LIST (arm.c): ENOEXEC, EPERM (SVE not finalized), EFAULT; ``n`` is
    written back before E2BIG."""
    vcpu = _initialized(f)
    regs = vcpu.arch.regs
    if regs.has_sve and not regs.sve_finalized:
        raise oserror(errno.EPERM)
    n = copy_from_user(arg, A.kvm_reg_list).n
    ids = regs.reg_ids()
    copy_to_user(arg, A.kvm_reg_list(len(ids)))
    if n < len(ids):
        raise oserror(errno.E2BIG)
    write_user_at(arg, 8, b"".join(i.to_bytes(8, "little") for i in ids))
    return 0


def vcpu_finalize(f, arg):
    """KVM_ARM_VCPU_FINALIZE: the argument points to an int (get_user)."""
    vcpu = _initialized(f)
    what = ctypes.c_int.from_buffer_copy(read_user_at(arg, 0, 4)).value
    regs = vcpu.arch.regs
    with vcpu.mutex:
        if what != A.KVM_ARM_VCPU_SVE or not regs.has_sve:
            raise oserror(errno.EINVAL)
        if regs.sve_finalized:
            raise oserror(errno.EPERM)
        regs.sve_finalized = True
    return 0


#: ESR_ELx_ISS_MASK: the ISS bits an injected SError's ESR may set
ESR_ISS_MASK = (1 << 25) - 1


def vcpu_get_events(f, arg):
    """KVM_GET_VCPU_EVENTS (__kvm_arm_vcpu_get_events): the pending SError; an external
    abort is delivered at once, never reported pending."""
    vcpu = _initialized(f)
    arch = vcpu.arch
    ev = A.kvm_vcpu_events()
    ev.exception.serror_pending = arch.serror_pending
    ev.exception.serror_has_esr = 1  # ARM64_HAS_RAS_EXTN
    if arch.serror_pending and arch.serror_esr is not None:
        ev.exception.serror_esr = arch.serror_esr
    copy_to_user(arg, ev)
    return 0


def vcpu_set_events(f, arg):
    vcpu = _initialized(f)
    ev = copy_from_user(arg, A.kvm_vcpu_events)
    exc = ev.exception
    if any(ev.reserved) or any(exc.pad):
        raise oserror(errno.EINVAL)
    arch = vcpu.arch
    with vcpu.mutex:
        if exc.serror_pending and exc.serror_has_esr:
            if exc.serror_esr & ~ESR_ISS_MASK:
                raise oserror(errno.EINVAL)
            arch.serror_pending, arch.serror_esr = True, exc.serror_esr
            arch.injected.append(("serror", exc.serror_esr))
        elif exc.serror_pending:
            arch.serror_pending, arch.serror_esr = True, None
            arch.injected.append(("serror", None))
        if exc.ext_dabt_pending:
            arch.injected.append(("dabt", None))
        if exc.ext_iabt_pending:
            arch.injected.append(("iabt", None))
    return 0


def vcpu_enable_cap(f, arg):
    """KVM_ENABLE_CAP on an arm64 vCPU: kvm_arch_vcpu_ioctl's default, EINVAL without
    reading the argument."""
    _vcpu(f)
    raise oserror(errno.EINVAL)


def vcpu_ioctls():
    return {
        A.KVM_ARM_VCPU_INIT: vcpu_init,
        K.KVM_RUN: vcpu_run,
        A.KVM_GET_ONE_REG: vcpu_get_one_reg,
        A.KVM_SET_ONE_REG: vcpu_set_one_reg,
        A.KVM_GET_REG_LIST: vcpu_get_reg_list,
        A.KVM_ARM_VCPU_FINALIZE: vcpu_finalize,
        A.KVM_GET_VCPU_EVENTS: vcpu_get_events,
        A.KVM_SET_VCPU_EVENTS: vcpu_set_events,
        K.KVM_ENABLE_CAP: vcpu_enable_cap,
        K.KVM_GET_MP_STATE: vcpu_get_mp_state,
        A.KVM_SET_DEVICE_ATTR: vcpu_attr.vcpu_set_attr,
        A.KVM_GET_DEVICE_ATTR: vcpu_attr.vcpu_get_attr,
        A.KVM_HAS_DEVICE_ATTR: vcpu_attr.vcpu_has_attr,
        K.KVM_SET_MP_STATE: vcpu_set_mp_state,
    }
