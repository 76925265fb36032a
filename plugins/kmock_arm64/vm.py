"""The arm64 normal VM type (KVM_VM_TYPE_ARM_NORMAL, 0) and its VM ioctls.

Sources (kernelorg-mirror/linux_kernel_git_oupton_linux, arch/arm64/kvm/arm.c and
mmu.c, read for this model):

* KVM_CREATE_VM: bits 7:0 are the IPA size (``kvm_init_stage2_mmu``, formerly
  ``kvm_arm_setup_stage2``): other bits -> EINVAL; a size above the host's IPA limit
  or below 32 -> EINVAL; 0 means 40 bits, EINVAL when the limit is below 40.
* ``kvm_vm_ioctl_check_extension``: the capabilities below; KVM_CAP_ARM_VM_IPA_SIZE is
  the host's IPA limit; MAX_VCPUS follows the vGIC model once one exists.
* ``kvm_arch_vm_ioctl``: KVM_ARM_PREFERRED_TARGET writes ``{target =
  KVM_ARM_TARGET_GENERIC_V8}`` with no feature bit; an unknown ioctl is EINVAL.
* ``kvm_vm_ioctl_enable_cap``: flags -> EINVAL; unknown capabilities -> EINVAL.
* ``kvm_arch_vcpu_precreate``: an initialised vGIC -> EBUSY; id >= max_vcpus -> EINVAL.
* ``kvm_arch_prepare_memory_region`` (6.18): a guest_memfd slot must be gmem-only
  (GUEST_MEMFD_FLAG_MMAP) -> else EINVAL [U: not re-read]; a slot past the IPA space
  -> EFAULT [U: not re-read].
"""

import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user
from kmock.kvm import vm as core_vm
from kmock.kvm.vmtype import VmType
from kmock.locks import RLock
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from . import irq as arm64_irq
from . import irqfd as arm64_irqfd
from . import regs as arm64_regs
from . import vcpu as arm64_vcpu
from . import vcpu_attr
from .psci import PsciGuest, mpidr_aff
from .vgic import VgicDevice, create_vgic

KVM_PHYS_SHIFT = 40  # the IPA size of a type with bits 7:0 == 0
ARM64_MIN_PARANGE_BITS = 32
PAGE_SHIFT = 12


class Arm64VmState:
    """vm.arch of an arm64 VM: the IPA size, the vGIC, the VM-wide vCPU features."""

    def __init__(self, ipa_bits):
        self.ipa_bits = ipa_bits
        self.vgic = None
        #: kvm->arch.vcpu_features once the first KVM_ARM_VCPU_INIT set them
        self.vcpu_features = None
        self.has_ran_once = False
        #: kvm->arch.psci_version (KVM_REG_ARM_PSCI_VERSION; 0: the latest)
        self.psci_version = 0
        #: kvm->arch.smccc_feat: the firmware feature bitmaps
        self.fw_bmaps = dict(arm64_regs.FW_BMAP_DEFAULTS)
        #: kvm->arch.timer_data.ppi, and KVM_ARCH_FLAG_TIMER_PPIS_IMMUTABLE (first run)
        self.timer_ppis = dict(vcpu_attr.TIMER_DEFAULT_PPIS)
        self.timer_ppis_immutable = False
        #: KVM_ARM_VCPU_PMU_V3_FILTER ranges, in order
        self.pmu_filters = []
        #: KVM_ARCH_FLAG_SYSTEM_SUSPEND_ENABLED, KVM_ARCH_FLAG_RETURN_NISV_IO_ABORT_TO_USER
        self.system_suspend_enabled = False
        self.nisv_to_user = False
        self.lock = RLock()  # (kmock.locks: threading.RLock's behaviour, cheaper to take)


def ipa_bits_of(type_arg, limit):
    """kvm_init_stage2_mmu's IPA size of a KVM_CREATE_VM argument (EINVAL if refused)."""
    phys_shift = type_arg & A.KVM_VM_TYPE_ARM_IPA_SIZE_MASK
    if phys_shift:
        if phys_shift > limit or phys_shift < ARM64_MIN_PARANGE_BITS:
            raise oserror(errno.EINVAL)
        return phys_shift
    if KVM_PHYS_SHIFT > limit:
        raise oserror(errno.EINVAL)  # "using unsupported default IPA limit, upgrade your VMM"
    return KVM_PHYS_SHIFT


class Arm64Vm(VmType):
    """KVM_VM_TYPE_ARM_NORMAL: an arm64 VM without private memory."""

    type = 0
    name = "KVM_VM_TYPE_ARM_NORMAL"
    arch = "arm64"
    platforms = None
    unknown_vm_ioctl_errno = errno.EINVAL
    #: the vGIC models KVM_CREATE_DEVICE accepts for VMs of this type
    vgic_models = (A.KVM_DEV_TYPE_ARM_VGIC_V2, A.KVM_DEV_TYPE_ARM_VGIC_V3)
    #: the KVM_CREATE_VM bits this type accepts besides the IPA size
    type_bits = 0
    #: ``vcpu.guest.psci``: the guest's PSCI calls (kmock_arm64.psci)
    guest_actions = {"psci": PsciGuest}
    #: the vGIC's side of irqfd and GSI routing (kmock.kvm.eventfds; kmock_arm64.irqfd)
    irqchip_model = arm64_irqfd.VGIC_IRQCHIP

    def __init__(self, kernel):
        #: the host's IPA limit: KVM_CAP_ARM_VM_IPA_SIZE of the profile
        self.ipa_limit = kernel.profile.caps.get(A.KVM_CAP_ARM_VM_IPA_SIZE, KVM_PHYS_SHIFT)

    def supports_gmem_init_shared(self, vm):
        return not self.has_private_mem

    def capabilities(self):
        return {}

    # --- lifecycle -----------------------------------------------------------------------

    def vm_init(self, vm):
        if vm.type_arg & ~(A.KVM_VM_TYPE_ARM_IPA_SIZE_MASK | self.type_bits):
            raise oserror(errno.EINVAL)
        vm.arch = self.vm_state(ipa_bits_of(vm.type_arg, self.ipa_limit))

    def vm_state(self, ipa_bits):
        """The ``vm.arch`` object of a new VM (a subclass extends Arm64VmState)."""
        return Arm64VmState(ipa_bits)

    def vcpu_state(self, vcpu):
        """The ``vcpu.arch`` object of a new vCPU."""
        return arm64_vcpu.Arm64VcpuState()

    def vcpu_create(self, vcpu):
        arch = vcpu.vm.arch
        vgic = arch.vgic
        if vgic is not None and vgic.initialized:
            raise oserror(errno.EBUSY)
        if vcpu.id >= self.max_vcpus(vcpu.vm):
            raise oserror(errno.EINVAL)
        vcpu.arch = self.vcpu_state(vcpu)
        vcpu.arch.regs = arm64_regs.Registers(vcpu.id, mpidr_aff(vcpu.id))

    def max_vcpus(self, vm):
        """kvm->max_vcpus: the vGIC model's limit (512 before a vGIC exists: GICv3 host)."""
        vgic = vm.arch.vgic
        return vgic.max_vcpus if vgic is not None else 512

    def memslot_prepare(self, vm, old, new, change):
        if new is None or change not in ("create", "move"):
            return
        if new.gmem_file is not None and not self.gmem_slot_ok(vm, new):
            raise oserror(errno.EINVAL)
        if new.base_gfn + new.npages > (1 << (vm.arch.ipa_bits - PAGE_SHIFT)):
            raise oserror(errno.EFAULT)

    def gmem_slot_ok(self, vm, slot):
        """A guest_memfd slot of a normal arm64 VM must be gmem-only (MMAP)."""
        return bool(slot.gmem_file.inode.flags & K.GUEST_MEMFD_FLAG_MMAP)

    def vcpu_init_check(self, vcpu, features):
        """The VM type's own KVM_ARM_VCPU_INIT checks (after the generic ones)."""

    def one_reg_check(self, vcpu, reg_id):
        """May KVM_SET_ONE_REG write ``reg_id``? Raise OSError to refuse."""

    def first_run(self, vcpu):
        """kvm_arch_vcpu_run_pid_change after the vCPU checks: map the vGIC's resources,
        kvm_timer_enable, kvm_arm_pmu_v3_enable. A subclass adds its own step (a realm's
        activation)."""
        vgic = vcpu.vm.arch.vgic
        if vgic is not None:
            vgic.map_resources()
        vcpu_attr.timer_enable(vcpu)
        vcpu_attr.pmu_enable(vcpu)

    # --- dispatch ---------------------------------------------------------------------------

    def ioctls(self, kernel, file_type):
        if file_type == "vm":
            return {
                A.KVM_ARM_PREFERRED_TARGET: vm_preferred_target,
                A.KVM_CREATE_DEVICE: vm_create_device,
                K.KVM_ENABLE_CAP: vm_enable_cap,
                K.KVM_CHECK_EXTENSION: vm_check_extension,
                K.KVM_IRQ_LINE: arm64_irq.vm_irq_line,
                K.KVM_IRQ_LINE_STATUS: arm64_irq.vm_irq_line_status,
                K.KVM_SIGNAL_MSI: arm64_irq.vm_signal_msi,
                K.KVM_CREATE_IRQCHIP: vm_create_irqchip,
                A.KVM_ARM_SET_DEVICE_ADDR: vm_set_device_addr,
                A.KVM_HAS_DEVICE_ATTR: vm_device_attr,
                A.KVM_SET_DEVICE_ATTR: vm_device_attr,
            }
        if file_type == "vcpu":
            return arm64_vcpu.vcpu_ioctls()
        return {}


def _vm(f):
    f.vm.check_caller()
    return f.vm


def vm_preferred_target(f, arg):
    _vm(f)
    init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
    copy_to_user(arg, init)
    return 0


def vm_create_device(f, arg):
    """kvm_ioctl_create_device for the vGIC models (other types: ENODEV)."""
    vm = _vm(f)
    cd = copy_from_user(arg, A.kvm_create_device)
    if cd.type not in (A.KVM_DEV_TYPE_ARM_VGIC_V2, A.KVM_DEV_TYPE_ARM_VGIC_V3):
        raise oserror(errno.ENODEV)
    if cd.flags & A.KVM_CREATE_DEVICE_TEST:
        if cd.type not in vm.vmtype.vgic_models:
            raise oserror(errno.ENODEV)
        return 0
    vgic = create_vgic(vm, cd.type, vm.vmtype.vgic_models)
    fd = vm.kernel.fdtable.install(VgicDevice(vm.kernel, vm, vgic))
    cd.fd = fd
    copy_to_user(arg, cd)
    return 0


def vm_create_irqchip(f, arg):
    """KVM_CREATE_IRQCHIP (kvm_arch_vm_ioctl): kvm_vgic_create(GICv2), no device fd."""
    vm = _vm(f)
    create_vgic(vm, A.KVM_DEV_TYPE_ARM_VGIC_V2, vm.vmtype.vgic_models)
    return 0


def vm_set_device_addr(f, arg):
    """KVM_ARM_SET_DEVICE_ADDR (kvm_vm_ioctl_set_device_addr): device id VGIC_V2 only
    (else ENODEV), then kvm_set_legacy_vgic_v2_addr."""
    vm = _vm(f)
    da = copy_from_user(arg, A.kvm_arm_device_addr)
    dev_id = (da.id & A.KVM_ARM_DEVICE_ID_MASK) >> A.KVM_ARM_DEVICE_ID_SHIFT
    if dev_id != A.KVM_ARM_DEVICE_VGIC_V2:
        raise oserror(errno.ENODEV)
    vgic = vm.arch.vgic
    addr_type = da.id & A.KVM_ARM_DEVICE_TYPE_MASK
    if addr_type not in (A.KVM_VGIC_V2_ADDR_TYPE_DIST, A.KVM_VGIC_V2_ADDR_TYPE_CPU):
        raise oserror(errno.ENODEV)
    if vgic is None or vgic.model != A.KVM_DEV_TYPE_ARM_VGIC_V2:
        raise oserror(errno.ENODEV)  # vgic_check_type
    vgic.set_addr(vm, addr_type, da.addr)
    return 0


def vm_device_attr(f, arg):
    """KVM_HAS/SET_DEVICE_ATTR on the VM (kvm_vm_has_attr / kvm_vm_set_attr): EFAULT,
    then every group ENXIO (KVM_ARM_VM_SMCCC_CTRL, the SMCCC filter, is not modelled).
    KVM_GET_DEVICE_ATTR is not a VM ioctl on arm64: EINVAL."""
    _vm(f)
    copy_from_user(arg, A.kvm_device_attr)
    raise oserror(errno.ENXIO)


def vm_enable_cap(f, arg):
    """KVM_ENABLE_CAP: kvm_vm_ioctl_enable_cap_generic first (kmock.kvm.vm.enable_cap_generic:
    MANUAL_DIRTY_LOG_PROTECT2, HALT_POLL, the dirty ring caps, DIRTY_LOG_RING_WITH_BITMAP),
    then kvm_vm_ioctl_enable_cap (arm64): flags -> EINVAL; KVM_CAP_ARM_SYSTEM_SUSPEND (PSCI
    SYSTEM_SUSPEND exits to the VMM) and KVM_CAP_ARM_NISV_TO_USER (kmock's guests make no
    ISV-less MMIO abort) -> 0; the others -> EINVAL."""
    vm = _vm(f)
    cap = copy_from_user(arg, K.kvm_enable_cap)  # EFAULT first
    r = core_vm.enable_cap_generic(vm, cap)
    if r is not None:
        return r
    if cap.flags:
        raise oserror(errno.EINVAL)
    if cap.cap == A.KVM_CAP_ARM_SYSTEM_SUSPEND:
        vm.arch.system_suspend_enabled = True
        return 0
    if cap.cap == A.KVM_CAP_ARM_NISV_TO_USER:
        vm.arch.nisv_to_user = True
        return 0
    raise oserror(errno.EINVAL)


def vm_check_extension(f, arg):
    vm = f.vm
    r = core_vm.vm_check_extension(f, arg)
    if type(arg) is int and arg in (K.KVM_CAP_MAX_VCPUS, K.KVM_CAP_MAX_VCPU_ID):
        return vm.vmtype.max_vcpus(vm)
    return r

