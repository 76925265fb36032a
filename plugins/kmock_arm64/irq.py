"""KVM_IRQ_LINE and KVM_IRQ_LINE_STATUS on arm64 (``kvm_vm_ioctl_irq_line``, arm.c).

The ``irq`` field: bits 31:28 vCPU index bits 11:8 (KVM_CAP_ARM_IRQ_LINE_LAYOUT_2), 27:24
the type, 23:16 vCPU index bits 7:0, 15:0 the interrupt number. Checks, in order:

* CPU (0, the IRQ / FIQ input of a vCPU without an in-kernel GIC): a vGIC exists ->
  ENXIO; no vCPU of that id -> EINVAL; a number above FIQ (1) -> EINVAL;
* PPI (2): no vGIC -> ENXIO; no vCPU -> EINVAL; a number outside 16..31 -> EINVAL; then
  kvm_vgic_inject_irq (a GICv3 not initialised -> EBUSY, a GICv2 initialises);
* SPI (1): no vGIC -> ENXIO; a number below 32 -> EINVAL; kvm_vgic_inject_irq (past the
  vGIC's SPIs -> EINVAL);
* any other type -> EINVAL.

KVM_IRQ_LINE_STATUS writes the struct back unchanged (kvm_main.c; arm64 sets no status).
The levels are kept for tests (``vcpu.arch.irq_lines``, ``vm.arch.vgic.lines``); a
raised line does not wake a halted kmock vCPU.
"""

import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

from .vgic import VGIC_NR_PRIVATE_IRQS, VGIC_NR_SGIS


def _decode(irq):
    irq_type = irq >> A.KVM_ARM_IRQ_TYPE_SHIFT & A.KVM_ARM_IRQ_TYPE_MASK
    vcpu_id = (irq >> A.KVM_ARM_IRQ_VCPU_SHIFT & A.KVM_ARM_IRQ_VCPU_MASK) + (
        irq >> A.KVM_ARM_IRQ_VCPU2_SHIFT & A.KVM_ARM_IRQ_VCPU2_MASK) * (A.KVM_ARM_IRQ_VCPU_MASK + 1)
    return irq_type, vcpu_id, irq >> A.KVM_ARM_IRQ_NUM_SHIFT & A.KVM_ARM_IRQ_NUM_MASK


def irq_line(vm, irq, level):
    irq_type, vcpu_id, num = _decode(irq)
    vgic = vm.arch.vgic
    if irq_type == A.KVM_ARM_IRQ_TYPE_CPU:
        if vgic is not None:
            raise oserror(errno.ENXIO)
        vcpu = vm.vcpus.get(vcpu_id)
        if vcpu is None or num > A.KVM_ARM_IRQ_CPU_FIQ:
            raise oserror(errno.EINVAL)
        vcpu.arch.irq_lines[num] = bool(level)  # HCR_EL2.VI / VF
        return
    if irq_type == A.KVM_ARM_IRQ_TYPE_PPI:
        if vgic is None:
            raise oserror(errno.ENXIO)
        if vm.vcpus.get(vcpu_id) is None:
            raise oserror(errno.EINVAL)
        if num < VGIC_NR_SGIS or num >= VGIC_NR_PRIVATE_IRQS:
            raise oserror(errno.EINVAL)
        vgic.inject(vcpu_id, num, level)
        return
    if irq_type == A.KVM_ARM_IRQ_TYPE_SPI:
        if vgic is None:
            raise oserror(errno.ENXIO)
        if num < VGIC_NR_PRIVATE_IRQS:
            raise oserror(errno.EINVAL)
        vgic.inject(None, num, level)
        return
    raise oserror(errno.EINVAL)


def vm_irq_line(f, arg):
    vm = f.vm
    vm.check_caller()
    ev = copy_from_user(arg, K.kvm_irq_level)
    irq_line(vm, ev.irq, ev.level)
    return 0


def vm_irq_line_status(f, arg):
    vm = f.vm
    vm.check_caller()
    ev = copy_from_user(arg, K.kvm_irq_level)
    irq_line(vm, ev.irq, ev.level)
    copy_to_user(arg, ev)
    return 0


def vm_signal_msi(f, arg):
    """KVM_SIGNAL_MSI (kvm_send_userspace_msi, then arm64's kvm_set_msi): EFAULT; no vGIC
    or flags other than KVM_MSI_VALID_DEVID -> EINVAL; no ITS (kmock models none) ->
    ENODEV."""
    vm = f.vm
    vm.check_caller()
    msi = copy_from_user(arg, K.kvm_msi)
    if vm.arch.vgic is None or msi.flags & ~K.KVM_MSI_VALID_DEVID:
        raise oserror(errno.EINVAL)
    raise oserror(errno.ENODEV)  # vgic_its_inject_msi: !vgic_has_its
