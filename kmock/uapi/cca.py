"""The UAPI of Steven Price's "arm64: Support for Arm CCA in KVM" series (not merged).

The numbers moved between revisions, so every revision's values are data in
``REVISIONS``; the newest revision whose patches were read (``DEFAULT_REVISION``) is also
exported as plain constants. A profile picks a revision; a VMM that probes the running
kernel reads the capability number from /sys/module/kvm/parameters/kvm_cap_arm_rmi.

Sources, per revision (lore threads; docs/arch/cca.md lists each value with its patch):
- v12 (2025-12-17, RMM v1.0): patch 06/46 "Define the user ABI", 09/46 "Allow passing
  machine type", 20/46 "Allow populating initial contents".
- v13 (2026-03-18, RMM v2.0-bet0): the same patches at 11/48 and 14/48.
- v14 (2026-05-13, RMM v2.0-bet1): patch 13/44 "Define the user ABI", 16/44 "Allow passing
  machine type", 26/44 "Allow populating initial contents".
- v15 (2026-07-15): not read; only a VMM's porting notes say KVM_CAP_ARM_RMI is 251 there.
  Its values are listed in ``UNCONFIRMED``.

There is no KVM_ARM_VCPU_REC feature in any of these revisions (removed in v12: "RECs are
created on the first VCPU run"), and no KVM_ARM_VCPU_RMI_PSCI_COMPLETE since v14.
"""

import ctypes
import errno as _errno

from .ioctl import _IOW, _IOWR
from .kvm import KVMIO

u32 = ctypes.c_uint32
u64 = ctypes.c_uint64


class kvm_arm_rmi_populate(ctypes.Structure):
    """In (v12) or in/out (v13+): KVM advances base/source_uaddr and shrinks size."""

    _fields_ = [
        ("base", u64),
        ("size", u64),
        ("source_uaddr", u64),
        ("flags", u32),
        ("reserved", u32),
    ]


class kvm_arm_rmi_psci_complete(ctypes.Structure):
    """v12 and v13 only."""

    _fields_ = [("target_mpidr", u64), ("psci_status", u32), ("padding", u32 * 3)]


KVM_ARM_RMI_POPULATE_FLAGS_MEASURE = 1 << 0

_POPULATE_IN = _IOW(KVMIO, 0xD7, kvm_arm_rmi_populate)
_POPULATE_INOUT = _IOWR(KVMIO, 0xD7, kvm_arm_rmi_populate)
_PSCI_COMPLETE = _IOW(KVMIO, 0xD6, kvm_arm_rmi_psci_complete)

# Keys of each revision:
#   KVM_CAP_ARM_RMI, KVM_VM_TYPE_ARM_REALM, KVM_ARM_RMI_POPULATE,
#   KVM_ARM_VCPU_RMI_PSCI_COMPLETE (None when the ioctl does not exist),
#   vm_type_valid_bits: the KVM_CREATE_VM type bits kvm_arch_init_vm accepts (others: EINVAL),
#   populate_inout: POPULATE writes base/size/source_uaddr back and returns 0 (else: bytes),
#   populate_checks_source_alignment: a misaligned source_uaddr is EINVAL,
#   populate_non_realm_errno: POPULATE on a VM that is not a realm,
#   irqchip_check_before_create: kvm_activate_realm checks irqchip_in_kernel() before it
#     creates the RD (v14); v12 checks after marking the realm DEAD, so the realm is lost,
#   rmm_version: the RMM specification the revision targets.
REVISIONS = {
    "v12": {
        "KVM_CAP_ARM_RMI": 247,
        "KVM_VM_TYPE_ARM_REALM": 1 << 8,
        "KVM_ARM_RMI_POPULATE": _POPULATE_IN,
        "KVM_ARM_VCPU_RMI_PSCI_COMPLETE": _PSCI_COMPLETE,
        "vm_type_valid_bits": 0xFF | (0xF << 8),
        "populate_inout": False,
        "populate_checks_source_alignment": False,
        "populate_non_realm_errno": _errno.EPERM,
        "irqchip_check_before_create": False,
        "rmm_version": "1.0",
    },
    "v13": {
        "KVM_CAP_ARM_RMI": 248,
        "KVM_VM_TYPE_ARM_REALM": 1 << 8,
        "KVM_ARM_RMI_POPULATE": _POPULATE_INOUT,
        "KVM_ARM_VCPU_RMI_PSCI_COMPLETE": _PSCI_COMPLETE,
        "vm_type_valid_bits": 0xFF | (0xF << 8),
        "populate_inout": True,
        "populate_checks_source_alignment": True,
        "populate_non_realm_errno": _errno.ENXIO,
        "irqchip_check_before_create": True,
        "rmm_version": "2.0-bet0",
    },
    "v14": {
        "KVM_CAP_ARM_RMI": 249,
        "KVM_VM_TYPE_ARM_REALM": 1 << 30,
        "KVM_ARM_RMI_POPULATE": _POPULATE_INOUT,
        "KVM_ARM_VCPU_RMI_PSCI_COMPLETE": None,
        "vm_type_valid_bits": 0xFF | (1 << 30) | (1 << 31),
        "populate_inout": True,
        "populate_checks_source_alignment": True,
        "populate_non_realm_errno": _errno.ENXIO,
        "irqchip_check_before_create": True,
        "rmm_version": "2.0-bet1",
    },
    "v15": {
        "KVM_CAP_ARM_RMI": 251,
        "KVM_VM_TYPE_ARM_REALM": 1 << 30,
        "KVM_ARM_RMI_POPULATE": _POPULATE_INOUT,
        "KVM_ARM_VCPU_RMI_PSCI_COMPLETE": None,
        "vm_type_valid_bits": 0xFF | (1 << 30) | (1 << 31),
        "populate_inout": True,
        "populate_checks_source_alignment": True,
        "populate_non_realm_errno": _errno.ENXIO,
        "irqchip_check_before_create": True,
        "rmm_version": "2.0",
    },
}

# Values not read in the revision's own patches (carried over or second-hand).
UNCONFIRMED = {
    "v12": frozenset(),
    "v13": frozenset(
        {"populate_checks_source_alignment", "populate_non_realm_errno", "irqchip_check_before_create"}
    ),
    "v14": frozenset(),
    "v15": frozenset(REVISIONS["v15"]),
}

DEFAULT_REVISION = "v14"

_default = REVISIONS[DEFAULT_REVISION]
KVM_CAP_ARM_RMI = _default["KVM_CAP_ARM_RMI"]
KVM_VM_TYPE_ARM_REALM = _default["KVM_VM_TYPE_ARM_REALM"]
KVM_VM_TYPE_ARM_NORMAL = 0
KVM_ARM_RMI_POPULATE = _default["KVM_ARM_RMI_POPULATE"]

KVM_CAP_ARM_RMI_SYSFS = "/sys/module/kvm/parameters/kvm_cap_arm_rmi"


def revision(name):
    """The values of one series revision, e.g. ``revision("v12")["KVM_CAP_ARM_RMI"]``."""
    return REVISIONS[name]
