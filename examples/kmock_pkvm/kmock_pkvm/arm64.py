"""The example's own minimal arm64 KVM surface: what a pKVM VMM needs and no more.

kmock's arm64 surface is being written as a plugin of its own; this example must
not depend on it, so it carries the few arm64 pieces its VM type uses, as that VM
type's own tables (kmock.kvm.vmtype.VmType.ioctls), which override the core's
handlers for protected VMs only:

* KVM_CREATE_VM's IPA size in bits 7:0 (``check_ipa_size``, called from vm_init):
  0 means 40 bits; otherwise it must be within [32, KVM_CAP_ARM_VM_IPA_SIZE], else
  EINVAL (arch/arm64/kvm/mmu.c kvm_init_stage2_mmu / kvm_arm_setup_stage2);
* KVM_ARM_PREFERRED_TARGET (VM) and KVM_ARM_VCPU_INIT (vCPU): the target must be
  GENERIC_V8, the only one KVM_ARM_PREFERRED_TARGET reports now (EINVAL), feature bits past KVM_VCPU_MAX_FEATURES
  are ENOENT, a second init with other features is EINVAL; KVM_RUN before the init
  is ENOEXEC (arch/arm64/kvm/arm.c kvm_vcpu_set_target,
  kvm_vcpu_init_check_features, kvm_vcpu_first_run_init);
* KVM_GET_ONE_REG / KVM_SET_ONE_REG of the core registers X0..X30 and PC (other
  ids: ENOENT): how a VMM reads a hypercall's arguments and writes its result.
"""

import ctypes
import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user

from . import uapi as A


class VcpuRegs:
    """``vcpu.arch`` of a protected vCPU: the registers a VMM may read and write."""

    def __init__(self):
        self.x = [0] * 31
        self.pc = 0
        self.features = None  # set by KVM_ARM_VCPU_INIT

    @property
    def initialised(self):
        return self.features is not None


def check_ipa_size(vm):
    """KVM_CREATE_VM's bits 7:0 on arm64; returns the IPA size in bits."""
    bits = vm.type_arg & A.KVM_VM_TYPE_ARM_IPA_SIZE_MASK
    if bits == 0:
        return A.KVM_PHYS_SHIFT
    limit = vm.kernel.profile.caps.get(A.KVM_CAP_ARM_VM_IPA_SIZE, A.KVM_PHYS_SHIFT)
    if bits < A.ARM64_MIN_PARANGE_BITS or bits > limit:
        raise oserror(errno.EINVAL)
    return bits


def preferred_target(f, arg):
    f.vm.check_caller()
    init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
    copy_to_user(arg, init)
    return 0


def vcpu_init(f, arg):
    f.vm.check_caller()
    init = copy_from_user(arg, A.kvm_vcpu_init)
    if init.target != A.KVM_ARM_TARGET_GENERIC_V8:
        raise oserror(errno.EINVAL)
    features = init.features[0]
    if features >> A.KVM_VCPU_MAX_FEATURES or any(init.features[1:]):
        raise oserror(errno.ENOENT)
    regs = f.vcpu.arch
    if regs.initialised and regs.features != features:
        raise oserror(errno.EINVAL)  # kvm_vcpu_init_changed()
    regs.features = features
    return 0


def _reg(f, arg):
    f.vm.check_caller()
    one = copy_from_user(arg, A.kvm_one_reg)
    rid = one.id
    if rid == A.KVM_REG_ARM_CORE_PC:
        return one, None
    n, odd = divmod(rid - A.KVM_REG_ARM_CORE_X0, 2)
    if odd or not 0 <= n <= 30:
        raise oserror(errno.ENOENT)
    return one, n


def get_one_reg(f, arg):
    one, n = _reg(f, arg)
    regs = f.vcpu.arch
    value = regs.pc if n is None else regs.x[n]
    copy_to_user(one.addr, ctypes.c_uint64(value))
    return 0


def set_one_reg(f, arg):
    one, n = _reg(f, arg)
    value = copy_from_user(one.addr, ctypes.c_uint64).value
    regs = f.vcpu.arch
    if n is None:
        regs.pc = value
    else:
        regs.x[n] = value
    return 0


def vm_ioctls():
    return {A.KVM_ARM_PREFERRED_TARGET: preferred_target}


def vcpu_ioctls():
    return {A.KVM_ARM_VCPU_INIT: vcpu_init, A.KVM_GET_ONE_REG: get_one_reg,
            A.KVM_SET_ONE_REG: set_one_reg}
