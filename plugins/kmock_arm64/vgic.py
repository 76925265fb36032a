"""The in-kernel vGIC as KVM_CREATE_DEVICE makes it: a device fd with device attributes.

What a VMM does with it before the first KVM_RUN: KVM_CREATE_DEVICE(VGIC_V3), the
distributor and redistributor addresses (``KVM_DEV_ARM_VGIC_GRP_ADDR``), optionally the
number of IRQs (``GRP_NR_IRQS``), then ``GRP_CTRL / KVM_DEV_ARM_VGIC_CTRL_INIT``.

Sources: arch/arm64/kvm/vgic/vgic-init.c ``kvm_vgic_create`` (GICv2 without emulation
-> ENODEV; a second vGIC -> EEXIST; a vCPU that already ran -> EBUSY; more vCPUs than
the model allows -> E2BIG; max vCPUs 8 for v2, 512 for v3) and
``kvm_vgic_map_resources`` (first KVM_RUN); virt/kvm/kvm_main.c
``kvm_ioctl_create_device`` (unknown type ENODEV, KVM_CREATE_DEVICE_TEST creates
nothing), ``kvm_device_ioctl`` (other ioctls ENOTTY). The attribute checks of
vgic-kvm-device.c (64K alignment EINVAL, an address set twice EEXIST, unknown
group/attribute ENXIO, NR_IRQS a multiple of 32 in [64, 1024] else EINVAL, after init
EBUSY) are [U]: taken from upstream as remembered, not re-read for this model.
"""

import errno
import threading

from kmock.errors import oserror
from kmock.file import File
from kmock.kernel_util import copy_from_user, read_user_at, write_user_at
from kmock.uapi import arm64 as A

VGIC_V2_MAX_CPUS = 8
VGIC_V3_MAX_CPUS = 512
SZ_64K = 0x10000
U64 = (1 << 64) - 1
_V3_ADDRS = (A.KVM_VGIC_V3_ADDR_TYPE_DIST, A.KVM_VGIC_V3_ADDR_TYPE_REDIST,
             A.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION)
_V2_ADDRS = (A.KVM_VGIC_V2_ADDR_TYPE_DIST, A.KVM_VGIC_V2_ADDR_TYPE_CPU)


class Vgic:
    """kvm->arch.vgic: the model, its addresses, whether CTRL_INIT ran."""

    def __init__(self, model):
        self.model = model
        self.addrs = {}
        self.nr_irqs = 0
        self.initialized = False
        self.ready = False
        self.lock = threading.Lock()

    @property
    def max_vcpus(self):
        return VGIC_V2_MAX_CPUS if self.model == A.KVM_DEV_TYPE_ARM_VGIC_V2 else VGIC_V3_MAX_CPUS

    def map_resources(self):
        """kvm_vgic_map_resources on the first KVM_RUN: a vGIC without its addresses is
        ENXIO; a GICv3 that userspace did not initialise is EBUSY [U: order]."""
        if self.ready:
            return
        needed = _V2_ADDRS if self.model == A.KVM_DEV_TYPE_ARM_VGIC_V2 else _V3_ADDRS[:1]
        if any(a not in self.addrs for a in needed) or (
                self.model == A.KVM_DEV_TYPE_ARM_VGIC_V3
                and not ({A.KVM_VGIC_V3_ADDR_TYPE_REDIST, A.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION}
                         & set(self.addrs))):
            raise oserror(errno.ENXIO)
        if self.model == A.KVM_DEV_TYPE_ARM_VGIC_V3 and not self.initialized:
            raise oserror(errno.EBUSY)
        self.initialized = True
        self.ready = True


def create_vgic(vm, dev_type, allowed):
    """kvm_vgic_create; ``allowed`` are the models this VM may have (a realm: v3 only)."""
    arch = vm.arch
    if dev_type not in allowed:
        raise oserror(errno.ENODEV)
    with arch.lock:
        if arch.vgic is not None:
            raise oserror(errno.EEXIST)
        if any(getattr(v.arch, "has_run", False) for v in vm.vcpus.values()):
            raise oserror(errno.EBUSY)
        vgic = Vgic(dev_type)
        if len(vm.vcpus) > vgic.max_vcpus:
            raise oserror(errno.E2BIG)
        arch.vgic = vgic
    return vgic


class VgicDevice(File):
    """The fd KVM_CREATE_DEVICE returns for a vGIC (anon inode "kvm-arm-vgic-v3")."""

    file_type = "kvm-device"

    def __init__(self, kernel, vm, vgic):
        super().__init__(kernel)
        self.vm = vm
        self.vgic = vgic
        vm.get()
        self.ioctls = {
            A.KVM_SET_DEVICE_ATTR: VgicDevice._set_attr,
            A.KVM_GET_DEVICE_ATTR: VgicDevice._get_attr,
            A.KVM_HAS_DEVICE_ATTR: VgicDevice._has_attr,
        }

    def release(self):
        self.vm.put()

    def _addr_types(self):
        return _V2_ADDRS if self.vgic.model == A.KVM_DEV_TYPE_ARM_VGIC_V2 else _V3_ADDRS

    def _has_attr(self, arg):
        attr = copy_from_user(arg, A.kvm_device_attr)
        g = attr.group
        if g == A.KVM_DEV_ARM_VGIC_GRP_ADDR and attr.attr in self._addr_types():
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_CTRL and attr.attr == A.KVM_DEV_ARM_VGIC_CTRL_INIT:
            return 0
        raise oserror(errno.ENXIO)

    def _set_attr(self, arg):
        attr = copy_from_user(arg, A.kvm_device_attr)
        vgic = self.vgic
        g = attr.group
        with vgic.lock:
            if g == A.KVM_DEV_ARM_VGIC_GRP_ADDR:
                if attr.attr not in self._addr_types():
                    raise oserror(errno.ENODEV)
                addr = int.from_bytes(read_user_at(attr.addr, 0, 8), "little")
                align = 0x1000 if self.vgic.model == A.KVM_DEV_TYPE_ARM_VGIC_V2 else SZ_64K
                if addr & (align - 1):
                    raise oserror(errno.EINVAL)
                if vgic.initialized and vgic.ready:
                    raise oserror(errno.EBUSY)
                if attr.attr in vgic.addrs:
                    raise oserror(errno.EEXIST)
                vgic.addrs[attr.attr] = addr
                return 0
            if g == A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
                val = int.from_bytes(read_user_at(attr.addr, 0, 4), "little")
                if val < 64 or val > 1024 or val % 32:
                    raise oserror(errno.EINVAL)
                if vgic.initialized or vgic.nr_irqs:
                    raise oserror(errno.EBUSY)
                vgic.nr_irqs = val
                return 0
            if g == A.KVM_DEV_ARM_VGIC_GRP_CTRL:
                if attr.attr != A.KVM_DEV_ARM_VGIC_CTRL_INIT:
                    raise oserror(errno.ENXIO)
                vgic.initialized = True
                return 0
        raise oserror(errno.ENXIO)

    def _get_attr(self, arg):
        attr = copy_from_user(arg, A.kvm_device_attr)
        vgic = self.vgic
        g = attr.group
        if g == A.KVM_DEV_ARM_VGIC_GRP_ADDR:
            if attr.attr not in self._addr_types():
                raise oserror(errno.ENODEV)
            addr = vgic.addrs.get(attr.attr, U64)  # VGIC_ADDR_UNDEF
            _write_u64(attr.addr, addr)
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
            write_user_at(attr.addr, 0, (vgic.nr_irqs or 256).to_bytes(4, "little"))
            return 0
        raise oserror(errno.ENXIO)


def _write_u64(addr, value):
    write_user_at(addr, 0, (value & U64).to_bytes(8, "little"))

