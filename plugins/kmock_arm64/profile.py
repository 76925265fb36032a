"""``linux-arm64``: upstream 6.18 KVM on an arm64 host with a GICv3 and a 48-bit IPA limit.

Capabilities: what ``kvm_vm_ioctl_check_extension`` (arch/arm64/kvm/arm.c, read)
answers on /dev/kvm of such a host (PSCI, ONE_REG, READONLY_MEM, MP_STATE,
IMMEDIATE_EXIT, VCPU_ATTRIBUTES, SET_DEVICE_ADDR, VCPU_EVENTS, ARM_IRQ_LINE_LAYOUT_2,
ARM_USER_IRQ = 1; MAX_VCPUS / MAX_VCPU_ID = 512, the
GICv3 limit; KVM_CAP_ARM_VM_IPA_SIZE = the IPA limit; PMU v3, SVE, pointer
authentication present; no AArch32 EL1), plus the generic ones (USER_MEMORY2,
MEMORY_FAULT_INFO, GUEST_MEMFD, BINARY_STATS_FD, DEVICE_CTRL).

Eventfds and dirty logging (kmock.kvm.eventfds with kmock_arm64.irqfd, kmock.kvm.dirty_log,
kmock.kvm.dirty_ring): IOEVENTFD and IRQFD_RESAMPLE (arm.c); IRQFD, IOEVENTFD_ANY_LENGTH,
HALT_POLL, IRQ_ROUTING = KVM_MAX_IRQ_ROUTES, MANUAL_DIRTY_LOG_PROTECT2 =
KVM_DIRTY_LOG_MANUAL_CAPS, DIRTY_LOG_RING_ACQ_REL = KVM_DIRTY_RING_MAX_ENTRIES *
sizeof(struct kvm_dirty_gfn) and DIRTY_LOG_RING_WITH_BITMAP = 1
(kvm_vm_ioctl_check_extension_generic, under what arch/arm64/kvm/Kconfig selects:
HAVE_KVM_IRQCHIP, HAVE_KVM_IRQ_ROUTING, KVM_GENERIC_DIRTYLOG_READ_PROTECT,
HAVE_KVM_DIRTY_RING_ACQ_REL, NEED_KVM_DIRTY_RING_WITH_BITMAP). DIRTY_LOG_RING is 0
(no HAVE_KVM_DIRTY_RING_TSO on arm64); IOEVENTFD_NO_LENGTH is x86's.

Left at 0 because kmock does not model them on arm64 (a VMM takes its fallback path):
COALESCED_MMIO (as on x86), MTE, SET_GUEST_DEBUG, PTP_KVM, COUNTER_OFFSET.

KVM_GET_VCPU_MMAP_SIZE is two pages (kvm_dev_ioctl: kvm_run, and the coalesced-MMIO page
under CONFIG_KVM_MMIO; no PIO page outside x86).

Choices: one memslot address space (no SMM on arm64); upstream arm64 does not select
CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES (no KVM_SET_MEMORY_ATTRIBUTES: EINVAL, the arm64
default); KVM_PRE_FAULT_MEMORY is left out (``tdp=False``: EOPNOTSUPP) [U: whether
6.18 arm64 has it was not checked]. KVM_CAP_NR_VCPUS is min(online CPUs, 512): 8 here.
"""

import dataclasses
from types import MappingProxyType

from kmock import profiles
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K

IPA_LIMIT = 48

CAPS = {
    K.KVM_CAP_IRQCHIP: 1,
    K.KVM_CAP_USER_MEMORY: 1,
    K.KVM_CAP_NR_VCPUS: 8,
    K.KVM_CAP_NR_MEMSLOTS: K.KVM_USER_MEM_SLOTS,
    K.KVM_CAP_MAX_VCPUS: 512,
    K.KVM_CAP_MAX_VCPU_ID: 512,
    K.KVM_CAP_IMMEDIATE_EXIT: 1,
    K.KVM_CAP_BINARY_STATS_FD: 1,
    K.KVM_CAP_USER_MEMORY2: 1,
    K.KVM_CAP_MEMORY_FAULT_INFO: 1,
    K.KVM_CAP_GUEST_MEMFD: 1,
    A.KVM_CAP_MP_STATE: 1,
    A.KVM_CAP_ONE_REG: 1,
    A.KVM_CAP_READONLY_MEM: 1,
    A.KVM_CAP_ARM_PSCI: 1,
    A.KVM_CAP_ARM_SET_DEVICE_ADDR: 1,
    A.KVM_CAP_DEVICE_CTRL: 1,
    A.KVM_CAP_ARM_PSCI_0_2: 1,
    A.KVM_CAP_ARM_PMU_V3: 1,
    A.KVM_CAP_VCPU_ATTRIBUTES: 1,
    A.KVM_CAP_ARM_VM_IPA_SIZE: IPA_LIMIT,
    A.KVM_CAP_ARM_SVE: 1,
    A.KVM_CAP_ARM_PTRAUTH_ADDRESS: 1,
    A.KVM_CAP_ARM_PTRAUTH_GENERIC: 1,
    A.KVM_CAP_VCPU_EVENTS: 1,
    A.KVM_CAP_ARM_IRQ_LINE_LAYOUT_2: 1,
    A.KVM_CAP_ARM_USER_IRQ: 1,
    A.KVM_CAP_ARM_INJECT_SERROR_ESR: 1,  # ARM64_HAS_RAS_EXTN
    A.KVM_CAP_ARM_INJECT_EXT_DABT: 1,
    A.KVM_CAP_STEAL_TIME: 1,  # kvm_arm_pvtime_supported: schedstats on
    A.KVM_CAP_ARM_SYSTEM_SUSPEND: 1,
    A.KVM_CAP_ARM_NISV_TO_USER: 1,
    16: 1,  # KVM_CAP_SYNC_MMU (arm.c)
    21: 1,  # KVM_CAP_DESTROY_MEMORY_REGION_WORKS (arm.c, generic)
    # kvm_vm_ioctl_check_extension_generic constants
    30: 1,  # KVM_CAP_JOIN_MEMORY_REGIONS_WORKS
    40: 1,  # KVM_CAP_INTERNAL_ERROR_DATA
    98: 1,  # KVM_CAP_ENABLE_CAP_VM
    105: 1,  # KVM_CAP_CHECK_EXTENSION_VM
    215: 1,  # KVM_CAP_SYSTEM_EVENT_DATA (PSCI system events fill ndata/data)
    77: 1,  # KVM_CAP_SIGNAL_MSI (CONFIG_HAVE_KVM_MSI; no ITS here: ENODEV)
    # eventfds and routing (arm.c: IOEVENTFD, IRQFD_RESAMPLE; the rest generic)
    25: K.KVM_MAX_IRQ_ROUTES,  # KVM_CAP_IRQ_ROUTING (generic include/linux/kvm_host.h: 4096)
    32: 1,  # KVM_CAP_IRQFD
    36: 1,  # KVM_CAP_IOEVENTFD
    82: 1,  # KVM_CAP_IRQFD_RESAMPLE
    122: 1,  # KVM_CAP_IOEVENTFD_ANY_LENGTH
    K.KVM_CAP_HALT_POLL: 1,
    # dirty logging (generic)
    K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: 3,  # KVM_DIRTY_LOG_MANUAL_CAPS
    K.KVM_CAP_DIRTY_LOG_RING_ACQ_REL: 65536 * 16,  # KVM_DIRTY_RING_MAX_ENTRIES * 16
    K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP: 1,
}

LINUX_ARM64 = dataclasses.replace(
    profiles.LINUX_6_18,
    name="linux-arm64",
    description="upstream Linux 6.18.y, arm64 host with GICv3, 48-bit IPA, guest_memfd",
    arch="arm64",
    platform="none",
    caps=MappingProxyType(CAPS),
    cpuid=(),
    memory_attributes=False,
    tdp=False,
    nr_memslot_as_ids=1,
    max_vcpus=512,
    max_vcpu_ids=512,
    vcpu_mmap_size=2 * 4096,
)
