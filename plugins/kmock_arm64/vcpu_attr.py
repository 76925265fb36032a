"""vCPU device attributes (KVM_SET/GET/HAS_DEVICE_ATTR on a vCPU fd) and the checks the
first KVM_RUN makes on what they configured.

Sources (read): arch/arm64/kvm/guest.c ``kvm_arm_vcpu_arch_set/get/has_attr`` (groups
PMU_V3_CTRL, TIMER_CTRL, PVTIME_CTRL; others -> ENXIO), arm.c (the attribute is copied
first: EFAULT); pmu-emul.c ``kvm_arm_pmu_v3_set_attr`` (no PMU feature -> ENODEV; after
INIT -> EBUSY; IRQ: no vGIC -> EINVAL, EFAULT, not a PPI / SPI or not the VM's PPI or a
reused SPI -> EINVAL, set twice -> EBUSY; FILTER: a range past the host's events (PMUv3p5:
0x10000 events) or a bad action -> EINVAL, after the VM ran -> EBUSY;
SET_PMU: no such PMU -> ENXIO; INIT: with a vGIC, vGIC not initialised -> ENODEV, no IRQ
-> ENXIO), ``kvm_arm_pmu_v3_get_attr`` (IRQ: no vGIC EINVAL, no PMU ENODEV, unset ENXIO),
``kvm_arm_pmu_v3_has_attr``, ``kvm_arm_pmu_v3_enable`` (first run: a PMU vCPU without
INIT -> EINVAL; with a vGIC the IRQ must be a PPI or one of its SPIs, without one no IRQ
may be set -> EINVAL); arch_timer.c ``kvm_arm_timer_set_attr`` (no vGIC -> EINVAL, EFAULT,
not a PPI -> EINVAL, after the first run -> EBUSY, unknown timer -> ENXIO),
``kvm_arm_timer_get/has_attr``, ``kvm_timer_enable`` (first run with a vGIC: the vGIC not
initialised -> ENODEV; two timers on one PPI -> EINVAL) [U: timer_irqs_are_valid recalled,
not re-read]; pvtime.c ``kvm_arm_pvtime_set/get/has_attr`` (IPA: EFAULT, not 64-byte
aligned -> EINVAL, set twice -> EEXIST, outside every memslot -> EINVAL; unset reads
INVALID_GPA).

The modelled host has one PMU (perf type 8 [choice]) and schedstats on (pvtime
supported). Default timer PPIs: vtimer 27, ptimer 30, hvtimer 28, hptimer 26
(arch_timer.c default_ppi).
"""

import ctypes
import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, read_user_at, write_user_at
from kmock.uapi import arm64 as A

from .vgic import VGIC_NR_PRIVATE_IRQS, VGIC_NR_SGIS

U64 = (1 << 64) - 1
INVALID_GPA = U64
#: the host PMU's perf type (/sys/bus/event_source/devices/armv8_pmuv3_0/type)
HOST_PMU_TYPE = 8
#: __kvm_pmu_event_mask(PMUv3p5) + 1: 16-bit event numbers
PMU_NR_EVENTS = 0x10000
KVM_PMU_EVENT_ALLOW, KVM_PMU_EVENT_DENY = A.KVM_PMU_EVENT_ALLOW, A.KVM_PMU_EVENT_DENY
TIMER_DEFAULT_PPIS = {A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER: 27, A.KVM_ARM_VCPU_TIMER_IRQ_PTIMER: 30,
                      A.KVM_ARM_VCPU_TIMER_IRQ_HVTIMER: 28, A.KVM_ARM_VCPU_TIMER_IRQ_HPTIMER: 26}


def irq_is_ppi(irq):
    return VGIC_NR_SGIS <= irq < VGIC_NR_PRIVATE_IRQS


def irq_is_spi(irq):
    return VGIC_NR_PRIVATE_IRQS <= irq <= 1019  # VGIC_MAX_SPI


def _int_at(addr):
    return ctypes.c_int.from_buffer_copy(read_user_at(addr, 0, 4)).value


def _has_pmu(vcpu):
    return bool(vcpu.arch.features & 1 << A.KVM_ARM_VCPU_PMU_V3)


def _vgic(vcpu):
    return vcpu.vm.arch.vgic


# --- the PMU ---------------------------------------------------------------------------------


def _pmu_set(vcpu, attr):
    arch, vm_arch = vcpu.arch, vcpu.vm.arch
    if not _has_pmu(vcpu):
        raise oserror(errno.ENODEV)
    if arch.pmu_created:
        raise oserror(errno.EBUSY)
    a = attr.attr
    if a == A.KVM_ARM_VCPU_PMU_V3_IRQ:
        if _vgic(vcpu) is None:
            raise oserror(errno.EINVAL)
        irq = _int_at(attr.addr)
        if not (irq_is_ppi(irq) or irq_is_spi(irq)):
            raise oserror(errno.EINVAL)
        for v in vcpu.vm.vcpus.values():  # pmu_irq_is_valid
            other = getattr(v.arch, "pmu_irq", None)
            if other is None:
                continue
            if (irq_is_ppi(irq) and other != irq) or (not irq_is_ppi(irq) and other == irq):
                raise oserror(errno.EINVAL)
        if arch.pmu_irq is not None:
            raise oserror(errno.EBUSY)
        arch.pmu_irq = irq
        return
    if a == A.KVM_ARM_VCPU_PMU_V3_FILTER:
        base, nevents, action = _filter_at(attr.addr)
        if base + nevents > PMU_NR_EVENTS or action not in (KVM_PMU_EVENT_ALLOW,
                                                             KVM_PMU_EVENT_DENY):
            raise oserror(errno.EINVAL)
        if vm_arch.has_ran_once:
            raise oserror(errno.EBUSY)
        vm_arch.pmu_filters.append((base, nevents, action))
        return
    if a == A.KVM_ARM_VCPU_PMU_V3_SET_PMU:
        pmu_id = _int_at(attr.addr)
        if pmu_id != HOST_PMU_TYPE:
            raise oserror(errno.ENXIO)
        if vm_arch.has_ran_once:
            raise oserror(errno.EBUSY)
        return
    if a == A.KVM_ARM_VCPU_PMU_V3_INIT:
        vgic = _vgic(vcpu)
        if vgic is not None:
            if not vgic.initialized:
                raise oserror(errno.ENODEV)
            if arch.pmu_irq is None:
                raise oserror(errno.ENXIO)
        arch.pmu_created = True
        return
    raise oserror(errno.ENXIO)


def _filter_at(addr):
    """struct kvm_pmu_event_filter {u16 base_event; u16 nevents; u8 action; u8 pad[3]}."""
    raw = read_user_at(addr, 0, 8)
    return (int.from_bytes(raw[0:2], "little"), int.from_bytes(raw[2:4], "little"), raw[4])


def _pmu_get(vcpu, attr):
    if attr.attr == A.KVM_ARM_VCPU_PMU_V3_IRQ:
        if _vgic(vcpu) is None:
            raise oserror(errno.EINVAL)
        if not _has_pmu(vcpu):
            raise oserror(errno.ENODEV)
        if vcpu.arch.pmu_irq is None:
            raise oserror(errno.ENXIO)
        write_user_at(attr.addr, 0, bytes(ctypes.c_int(vcpu.arch.pmu_irq)))
        return
    raise oserror(errno.ENXIO)


def pmu_enable(vcpu):
    """kvm_arm_pmu_v3_enable on the first KVM_RUN."""
    if not _has_pmu(vcpu):
        return
    arch = vcpu.arch
    if not arch.pmu_created:
        raise oserror(errno.EINVAL)
    vgic = _vgic(vcpu)
    if vgic is not None:
        irq = arch.pmu_irq
        if not irq_is_ppi(irq) and not (VGIC_NR_PRIVATE_IRQS <= irq
                                        < VGIC_NR_PRIVATE_IRQS + vgic.nr_spis):
            raise oserror(errno.EINVAL)
    elif arch.pmu_irq is not None:
        raise oserror(errno.EINVAL)


# --- the timers ------------------------------------------------------------------------------


def _timer_set(vcpu, attr):
    vm_arch = vcpu.vm.arch
    if _vgic(vcpu) is None:
        raise oserror(errno.EINVAL)
    irq = _int_at(attr.addr)
    if not irq_is_ppi(irq):
        raise oserror(errno.EINVAL)
    with vm_arch.lock:
        if vm_arch.timer_ppis_immutable:
            raise oserror(errno.EBUSY)
        if attr.attr not in TIMER_DEFAULT_PPIS:
            raise oserror(errno.ENXIO)
        vm_arch.timer_ppis[attr.attr] = irq


def _timer_get(vcpu, attr):
    if attr.attr not in TIMER_DEFAULT_PPIS:
        raise oserror(errno.ENXIO)
    write_user_at(attr.addr, 0, bytes(ctypes.c_int(vcpu.vm.arch.timer_ppis[attr.attr])))


def timer_enable(vcpu):
    """kvm_timer_enable on the first KVM_RUN (no NV: the EL1 virtual and physical timers)."""
    vgic = _vgic(vcpu)
    if vgic is None:
        return
    if not vgic.initialized:
        raise oserror(errno.ENODEV)
    vm_arch = vcpu.vm.arch
    ppis = vm_arch.timer_ppis
    if ppis[A.KVM_ARM_VCPU_TIMER_IRQ_VTIMER] == ppis[A.KVM_ARM_VCPU_TIMER_IRQ_PTIMER]:
        raise oserror(errno.EINVAL)
    vm_arch.timer_ppis_immutable = True


# --- steal time ------------------------------------------------------------------------------


def _pvtime_set(vcpu, attr):
    if attr.attr != A.KVM_ARM_VCPU_PVTIME_IPA:
        raise oserror(errno.ENXIO)
    ipa = int.from_bytes(read_user_at(attr.addr, 0, 8), "little")
    if ipa % 64:
        raise oserror(errno.EINVAL)
    arch = vcpu.arch
    if arch.steal_base != INVALID_GPA:
        raise oserror(errno.EEXIST)
    if vcpu.vm.lookup_memslot(ipa >> 12) is None:
        raise oserror(errno.EINVAL)
    arch.steal_base = ipa


def _pvtime_get(vcpu, attr):
    if attr.attr != A.KVM_ARM_VCPU_PVTIME_IPA:
        raise oserror(errno.ENXIO)
    write_user_at(attr.addr, 0, vcpu.arch.steal_base.to_bytes(8, "little"))


# --- the ioctls ------------------------------------------------------------------------------

_SET = {A.KVM_ARM_VCPU_PMU_V3_CTRL: _pmu_set, A.KVM_ARM_VCPU_TIMER_CTRL: _timer_set,
        A.KVM_ARM_VCPU_PVTIME_CTRL: _pvtime_set}
_GET = {A.KVM_ARM_VCPU_PMU_V3_CTRL: _pmu_get, A.KVM_ARM_VCPU_TIMER_CTRL: _timer_get,
        A.KVM_ARM_VCPU_PVTIME_CTRL: _pvtime_get}


def _has(vcpu, attr):
    g, a = attr.group, attr.attr
    if g == A.KVM_ARM_VCPU_PMU_V3_CTRL:
        ok = a in (A.KVM_ARM_VCPU_PMU_V3_IRQ, A.KVM_ARM_VCPU_PMU_V3_INIT,
                   A.KVM_ARM_VCPU_PMU_V3_FILTER, A.KVM_ARM_VCPU_PMU_V3_SET_PMU) and _has_pmu(vcpu)
    elif g == A.KVM_ARM_VCPU_TIMER_CTRL:
        ok = a in TIMER_DEFAULT_PPIS
    elif g == A.KVM_ARM_VCPU_PVTIME_CTRL:
        ok = a == A.KVM_ARM_VCPU_PVTIME_IPA
    else:
        ok = False
    if not ok:
        raise oserror(errno.ENXIO)


def _dispatch(table):
    def handler(f, arg):
        f.vm.check_caller()
        vcpu = f.vcpu
        attr = copy_from_user(arg, A.kvm_device_attr)
        fn = table.get(attr.group)
        if fn is None:
            raise oserror(errno.ENXIO)
        with vcpu.mutex:
            fn(vcpu, attr)
        return 0
    return handler


vcpu_set_attr = _dispatch(_SET)
vcpu_get_attr = _dispatch(_GET)
vcpu_has_attr = _dispatch({g: _has for g in _SET})
