"""The in-kernel vGIC as KVM_CREATE_DEVICE (or KVM_CREATE_IRQCHIP) makes it.

What a VMM does with it before the first KVM_RUN: KVM_CREATE_DEVICE(VGIC_V3), the
distributor and redistributor addresses (``KVM_DEV_ARM_VGIC_GRP_ADDR``), optionally the
number of IRQs (``GRP_NR_IRQS``), then ``GRP_CTRL / KVM_DEV_ARM_VGIC_CTRL_INIT``. A GICv2
may skip CTRL_INIT: the first KVM_RUN or KVM_IRQ_LINE initialises it (vgic_lazy_init).

Sources (read): arch/arm64/kvm/vgic/vgic-init.c ``kvm_vgic_create`` (a second vGIC ->
EEXIST; a vCPU that already ran -> EBUSY; more vCPUs than the model allows -> E2BIG;
max vCPUs 8 for v2, 512 for v3), ``vgic_init`` (NR_IRQS defaults to 256),
``vgic_lazy_init`` (a GICv3 not initialised -> EBUSY), ``kvm_vgic_map_resources`` (first
KVM_RUN; on failure the vGIC's addresses and sizing are dropped: kvm_vgic_destroy);
vgic-v3.c / vgic-v2.c ``vgic_v*_map_resources`` (a vCPU without a redistributor, or no
distributor / CPU interface address -> ENXIO; overlapping frames -> EINVAL; a GICv3 not
initialised -> EBUSY); vgic-kvm-device.c ``vgic_check_iorange`` (already set -> EEXIST,
then misaligned -> EINVAL, wrapping -> EINVAL, past the IPA space -> E2BIG),
``kvm_vgic_addr`` (an address type of the other model or unknown -> ENXIO; a REDIST_REGION
with count 0 or flags -> EINVAL; reading an absent region -> ENOENT),
``vgic_set_common_attr`` (NR_IRQS: EFAULT, then below 64, above 1023 or not a multiple of
32 -> EINVAL, then set twice or vGIC ready -> EBUSY; CTRL other than INIT -> ENXIO),
``vgic_get_common_attr`` (NR_IRQS reads nr_spis + 32), ``vgic_v2/v3_has_attr``;
vgic-mmio-v3.c ``vgic_v3_alloc_redist_region`` (index order, legacy and discrete
regions not mixed: EINVAL; a second legacy region -> EEXIST; overlapping regions ->
EINVAL); virt/kvm/kvm_main.c ``kvm_ioctl_create_device`` (unknown type ENODEV,
KVM_CREATE_DEVICE_TEST creates nothing), ``kvm_device_ioctl`` (other ioctls ENOTTY).

Not modelled: the distributor / redistributor / CPU-interface register groups (DIST_REGS,
REDIST_REGS, CPU_REGS, CPU_SYSREGS, LEVEL_INFO: ENXIO here), the ITS, SAVE_PENDING_TABLES
(HAS_DEVICE_ATTR says 0 as the kernel does; SET is ENXIO).
"""

import errno
import threading

from kmock.errors import oserror
from kmock.file import File
from kmock.kernel_util import copy_from_user, read_user_at, write_user_at
from kmock.kvm import eventfds
from kmock.uapi import arm64 as A

VGIC_V2_MAX_CPUS = 8
VGIC_V3_MAX_CPUS = 512
VGIC_NR_SGIS = 16
VGIC_NR_PRIVATE_IRQS = 32
VGIC_MAX_RESERVED = 1023
VGIC_NR_IRQS_LEGACY = 256
SZ_4K = 0x1000
SZ_64K = 0x10000
U64 = (1 << 64) - 1
VGIC_ADDR_UNDEF = U64
_V3_ADDRS = (A.KVM_VGIC_V3_ADDR_TYPE_DIST, A.KVM_VGIC_V3_ADDR_TYPE_REDIST,
             A.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION)
_V2_ADDRS = (A.KVM_VGIC_V2_ADDR_TYPE_DIST, A.KVM_VGIC_V2_ADDR_TYPE_CPU)
#: (alignment, size) of each single-frame address type
_FRAMES = {A.KVM_VGIC_V2_ADDR_TYPE_DIST: (SZ_4K, A.KVM_VGIC_V2_DIST_SIZE),
           A.KVM_VGIC_V2_ADDR_TYPE_CPU: (SZ_4K, A.KVM_VGIC_V2_CPU_SIZE),
           A.KVM_VGIC_V3_ADDR_TYPE_DIST: (SZ_64K, A.KVM_VGIC_V3_DIST_SIZE)}


class RedistRegion:
    """struct vgic_redist_region: count 0 is the legacy region sized by the vCPUs."""

    def __init__(self, index, base, count):
        self.index, self.base, self.count = index, base, count


def _overlap(a, a_size, b, b_size):
    return a < b + b_size and b < a + a_size


class Vgic:
    """kvm->arch.vgic: the model, its addresses, its sizing, whether it is initialised
    (vgic_initialized) and mapped (vgic_ready), and the lines KVM_IRQ_LINE and irqfds
    drive: ``lines`` (vcpu id or None, intid) -> level, ``raised`` the same key -> the
    number of level-1 injections (an edge the level alone would not show)."""

    def __init__(self, vm, model):
        self.vm = vm
        self.model = model
        self.lock = threading.Lock()
        self.lines = {}
        self.raised = {}
        self._reset()

    def _reset(self):
        """kvm_vgic_dist_destroy: what a failed map_resources drops."""
        self.dist_base = VGIC_ADDR_UNDEF
        self.cpu_base = VGIC_ADDR_UNDEF  # GICv2
        self.rd_regions = []  # GICv3
        self.nr_spis = 0
        self.initialized = False
        self.ready = False

    @property
    def is_v2(self):
        return self.model == A.KVM_DEV_TYPE_ARM_VGIC_V2

    @property
    def max_vcpus(self):
        return VGIC_V2_MAX_CPUS if self.is_v2 else VGIC_V3_MAX_CPUS

    @property
    def addrs(self):
        """The addresses set so far, by KVM_VGIC_*_ADDR_TYPE (legacy REDIST: region 0)."""
        out = {}
        if self.dist_base != VGIC_ADDR_UNDEF:
            out[A.KVM_VGIC_V2_ADDR_TYPE_DIST if self.is_v2 else A.KVM_VGIC_V3_ADDR_TYPE_DIST] = \
                self.dist_base
        if self.cpu_base != VGIC_ADDR_UNDEF:
            out[A.KVM_VGIC_V2_ADDR_TYPE_CPU] = self.cpu_base
        if self.rd_regions:
            out[A.KVM_VGIC_V3_ADDR_TYPE_REDIST] = self.rd_regions[0].base
        return out

    def _ipa_size(self):
        return 1 << self.vm.arch.ipa_bits

    def check_iorange(self, current, addr, align, size):
        """vgic_check_iorange."""
        if current != VGIC_ADDR_UNDEF:
            raise oserror(errno.EEXIST)
        if addr % align or size % align:
            raise oserror(errno.EINVAL)
        if addr + size > U64:
            raise oserror(errno.EINVAL)
        if addr & ~(self._ipa_size() - 1) or addr + size > self._ipa_size():
            raise oserror(errno.E2BIG)

    def set_addr(self, vm, addr_type, addr):
        """A single-frame address (DIST, or the GICv2 CPU interface)."""
        align, size = _FRAMES[addr_type]
        with self.lock:
            current = self.cpu_base if addr_type == A.KVM_VGIC_V2_ADDR_TYPE_CPU else self.dist_base
            self.check_iorange(current, addr, align, size)
            if addr_type == A.KVM_VGIC_V2_ADDR_TYPE_CPU:
                self.cpu_base = addr
            else:
                self.dist_base = addr

    def _rd_size(self, region):
        """vgic_v3_rd_region_size."""
        n = region.count or len(self.vm.vcpus)
        return n * A.KVM_VGIC_V3_REDIST_SIZE

    def add_redist_region(self, index, base, count):
        """vgic_v3_alloc_redist_region (the legacy REDIST attribute: index 0, count 0)."""
        size = count * A.KVM_VGIC_V3_REDIST_SIZE
        with self.lock:
            if base + size > U64:
                raise oserror(errno.EINVAL)
            if not self.rd_regions:
                if index != 0:
                    raise oserror(errno.EINVAL)
            else:
                last = self.rd_regions[-1]
                if not count and last.count:
                    raise oserror(errno.EINVAL)  # legacy and discrete regions not mixed
                if not count:
                    raise oserror(errno.EEXIST)
                if index != last.index + 1:
                    raise oserror(errno.EINVAL)
            if (not count and self.dist_base != VGIC_ADDR_UNDEF
                    and _overlap(base, size, self.dist_base, A.KVM_VGIC_V3_DIST_SIZE)):
                raise oserror(errno.EINVAL)
            if any(_overlap(base, size, r.base, self._rd_size(r)) for r in self.rd_regions):
                raise oserror(errno.EINVAL)
            self.check_iorange(VGIC_ADDR_UNDEF, base, SZ_64K, size)
            self.rd_regions.append(RedistRegion(index, base, count))

    def region(self, index):
        return next((r for r in self.rd_regions if r.index == index), None)

    def init(self):
        """vgic_init: idempotent; freezes nr_spis (256 IRQs unless set); installs the
        default routing, one route per SPI, over any table KVM_SET_GSI_ROUTING set
        (kvm_vgic_setup_default_irq_routing; kmock_arm64.irqfd)."""
        if self.initialized:
            return
        if not self.nr_spis:
            self.nr_spis = VGIC_NR_IRQS_LEGACY - VGIC_NR_PRIVATE_IRQS
        from .irqfd import default_routing  # (irqfd imports this module)

        eventfds.install_routing(self.vm, default_routing(self.nr_spis))
        self.initialized = True

    def lazy_init(self):
        """vgic_lazy_init: a GICv2 initialises itself; a GICv3 must have had CTRL_INIT."""
        with self.lock:
            if not self.initialized:
                if not self.is_v2:
                    raise oserror(errno.EBUSY)
                self.init()

    def _redists_cover_vcpus(self):
        """Every vCPU got a redistributor frame (vgic_register_redist_iodev)."""
        if any(not r.count for r in self.rd_regions):
            return bool(self.rd_regions)
        return sum(r.count for r in self.rd_regions) >= len(self.vm.vcpus)

    def _v3_check_base(self):
        """vgic_v3_check_base: the regions fit the IPA space and miss the distributor."""
        ipa = self._ipa_size()
        for r in self.rd_regions:
            size = self._rd_size(r)
            if r.base % SZ_64K or r.base + size > ipa:
                return False
        return not any(_overlap(self.dist_base, A.KVM_VGIC_V3_DIST_SIZE, r.base,
                                self._rd_size(r)) for r in self.rd_regions)

    def map_resources(self):
        """kvm_vgic_map_resources on the first KVM_RUN; a failure drops the vGIC's
        configuration (kvm_vgic_destroy), so the VMM must set it up again."""
        with self.lock:
            if self.ready:
                return
            try:
                self._map()
            except OSError:
                self._reset()
                raise
            self.ready = True

    def _map(self):
        if self.is_v2:  # vgic_v2_map_resources
            if VGIC_ADDR_UNDEF in (self.dist_base, self.cpu_base):
                raise oserror(errno.ENXIO)
            if _overlap(self.dist_base, A.KVM_VGIC_V2_DIST_SIZE, self.cpu_base,
                        A.KVM_VGIC_V2_CPU_SIZE):
                raise oserror(errno.EINVAL)
            self.init()
            return
        if not self._redists_cover_vcpus() or self.dist_base == VGIC_ADDR_UNDEF:
            raise oserror(errno.ENXIO)
        if not self._v3_check_base():
            raise oserror(errno.EINVAL)
        if not self.initialized:
            raise oserror(errno.EBUSY)

    def inject(self, vcpu_id, intid, level):
        """kvm_vgic_inject_irq after vgic_lazy_init: an SPI past nr_spis (or an LPI:
        no ITS here) -> EINVAL."""
        self.lazy_init()
        if vcpu_id is None and intid < VGIC_NR_PRIVATE_IRQS:
            raise oserror(errno.EINVAL)
        if vcpu_id is None and intid >= VGIC_NR_PRIVATE_IRQS + self.nr_spis:
            raise oserror(errno.EINVAL)
        self.lines[(vcpu_id, intid)] = bool(level)
        if level:
            self.raised[(vcpu_id, intid)] = self.raised.get((vcpu_id, intid), 0) + 1


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
        vgic = Vgic(vm, dev_type)
        if len(vm.vcpus) > vgic.max_vcpus:
            raise oserror(errno.E2BIG)
        arch.vgic = vgic
    return vgic


def _u64_at(addr):
    return int.from_bytes(read_user_at(addr, 0, 8), "little")


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
        return _V2_ADDRS if self.vgic.is_v2 else _V3_ADDRS

    def _has_attr(self, arg):
        """vgic_v2_has_attr / vgic_v3_has_attr (register groups: not modelled)."""
        attr = copy_from_user(arg, A.kvm_device_attr)
        g, a = attr.group, attr.attr
        v3 = not self.vgic.is_v2
        if g == A.KVM_DEV_ARM_VGIC_GRP_ADDR and a in self._addr_types():
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS or (v3 and g == A.KVM_DEV_ARM_VGIC_GRP_MAINT_IRQ):
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_CTRL and (
                a == A.KVM_DEV_ARM_VGIC_CTRL_INIT
                or (v3 and a == A.KVM_DEV_ARM_VGIC_SAVE_PENDING_TABLES)):
            return 0
        raise oserror(errno.ENXIO)

    def _set_attr(self, arg):
        attr = copy_from_user(arg, A.kvm_device_attr)
        vgic = self.vgic
        g = attr.group
        if g == A.KVM_DEV_ARM_VGIC_GRP_ADDR:
            self._set_addr(attr.attr, _u64_at(attr.addr))
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
            val = int.from_bytes(read_user_at(attr.addr, 0, 4), "little")
            if val < VGIC_NR_PRIVATE_IRQS + 32 or val > VGIC_MAX_RESERVED or val & 31:
                raise oserror(errno.EINVAL)
            with vgic.lock:
                if vgic.ready or vgic.nr_spis:
                    raise oserror(errno.EBUSY)
                vgic.nr_spis = val - VGIC_NR_PRIVATE_IRQS
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_CTRL and attr.attr == A.KVM_DEV_ARM_VGIC_CTRL_INIT:
            with vgic.lock:
                vgic.init()
            return 0
        raise oserror(errno.ENXIO)

    def _set_addr(self, addr_type, addr):
        """kvm_vgic_addr(write); its ENODEV becomes ENXIO (vgic_set_common_attr)."""
        vgic = self.vgic
        if addr_type not in self._addr_types():
            raise oserror(errno.ENXIO)
        if addr_type == A.KVM_VGIC_V3_ADDR_TYPE_REDIST:
            vgic.add_redist_region(0, addr, 0)
        elif addr_type == A.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION:
            index = addr & A.KVM_VGIC_V3_RDIST_INDEX_MASK
            base = addr & A.KVM_VGIC_V3_RDIST_BASE_MASK
            count = (addr & A.KVM_VGIC_V3_RDIST_COUNT_MASK) >> A.KVM_VGIC_V3_RDIST_COUNT_SHIFT
            flags = (addr & A.KVM_VGIC_V3_RDIST_FLAGS_MASK) >> A.KVM_VGIC_V3_RDIST_FLAGS_SHIFT
            if not count or flags:
                raise oserror(errno.EINVAL)
            vgic.add_redist_region(index, base, count)
        else:
            vgic.set_addr(self.vm, addr_type, addr)

    def _get_attr(self, arg):
        attr = copy_from_user(arg, A.kvm_device_attr)
        vgic = self.vgic
        g, a = attr.group, attr.attr
        if g == A.KVM_DEV_ARM_VGIC_GRP_ADDR:
            if a not in self._addr_types():
                raise oserror(errno.ENXIO)
            if a == A.KVM_VGIC_V3_ADDR_TYPE_REDIST_REGION:
                index = _u64_at(attr.addr) & A.KVM_VGIC_V3_RDIST_INDEX_MASK
                r = vgic.region(index)
                if r is None:
                    raise oserror(errno.ENOENT)
                value = index | r.base | r.count << A.KVM_VGIC_V3_RDIST_COUNT_SHIFT
            elif a == A.KVM_VGIC_V3_ADDR_TYPE_REDIST:
                value = vgic.rd_regions[0].base if vgic.rd_regions else VGIC_ADDR_UNDEF
            elif a == A.KVM_VGIC_V2_ADDR_TYPE_CPU:
                value = vgic.cpu_base
            else:
                value = vgic.dist_base
            write_user_at(attr.addr, 0, (value & U64).to_bytes(8, "little"))
            return 0
        if g == A.KVM_DEV_ARM_VGIC_GRP_NR_IRQS:
            write_user_at(attr.addr, 0, (vgic.nr_spis + VGIC_NR_PRIVATE_IRQS).to_bytes(4, "little"))
            return 0
        raise oserror(errno.ENXIO)
