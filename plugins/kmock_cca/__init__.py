"""Arm CCA (the Realm Management Extension) for kmock, modelled on Steven Price's KVM
series "arm64: Support for Arm CCA in KVM" (v14 by default; v12/v13 and the unconfirmed
v15 numbers are settings: ``kmock_cca.series``).

Declares the platform ``cca`` (arm64) with its settings, the profile
``linux-arm64-cca``, and the VM type ``KVM_VM_TYPE_ARM_REALM`` (``realm.RealmVm``, a
subclass of kmock_arm64's normal VM type). On a ``cca`` kernel every VM gets
KVM_ARM_RMI_POPULATE (a normal VM gets the series' non-realm errno), and /dev/kvm and
every VM answer KVM_CHECK_EXTENSION(KVM_CAP_ARM_RMI).

Modules: ``rtt`` (the RMM's tables and commands), ``kvm_rmi`` (KVM's calls into them),
``realm`` (the VM type: lifecycle, memory callbacks, breakage), ``populate``
(KVM_ARM_RMI_POPULATE), ``guest`` (``vcpu.guest.cca``: RSI calls), ``series``
(revision settings). docs/arch/cca.md has the sources and choices.
"""

import dataclasses

from kmock.hookspecs import hookimpl
from kmock.platforms import Platform
from kmock_arm64 import LINUX_ARM64

from .populate import rmi_populate_ioctl
from .realm import RealmVm, granule_table_runs, rtt_table_runs
from .series import SETTINGS, series_of

CCA = Platform("cca", "arm64", "Arm CCA: an RMM at R-EL2 (RME), realms through the KVM CCA "
               "series", settings=SETTINGS)

LINUX_ARM64_CCA = dataclasses.replace(
    LINUX_ARM64,
    name="linux-arm64-cca",
    description="Linux with the KVM CCA series (v14 by default), arm64 host with RME and an "
                "RMM; the series selects KVM_GENERIC_MEMORY_ATTRIBUTES",
    platform="cca",
    memory_attributes=True,
)

__all__ = ["CCA", "LINUX_ARM64_CCA", "RealmVm", "series_of"]


def _on_cca(kernel):
    return kernel.profile.platform == "cca"


@hookimpl
def kmock_platforms(kernel):
    return [CCA]


@hookimpl
def kmock_profiles():
    return [LINUX_ARM64_CCA]


@hookimpl
def kmock_vm_types(kernel):
    if not _on_cca(kernel):
        return []
    return [RealmVm(kernel)]


@hookimpl
def kmock_capabilities(kernel):
    """KVM_CAP_ARM_RMI on /dev/kvm and every VM of a cca kernel:
    static_key_enabled(&kvm_rmi_is_available) (v14 14/44)."""
    if not _on_cca(kernel):
        return {}
    series = series_of(kernel)
    return {series.cap_arm_rmi: int(series.rmi_available)}


@hookimpl
def kmock_ioctls(kernel, file_type):
    """KVM_ARM_RMI_POPULATE on every VM of a cca kernel (a normal VM gets the series'
    non-realm errno)."""
    if not _on_cca(kernel) or file_type != "vm":
        return {}
    series = series_of(kernel)
    return {series.populate: rmi_populate_ioctl(series)}


@hookimpl
def kmock_snapshot(kernel, snapshot):
    """The summary under "cca", and the tables ``kmock dump`` lists and draws: the
    granule protection states (host frames, Realm PAS) and each realm's RTT
    (HIPAS/RIPAS by IPA). Runs only, never pages."""
    for t in kernel.vm_types.values():
        if isinstance(t, RealmVm):
            snapshot["cca"] = t.snapshot()
            snapshot.add_table("cca", "granules (Realm PAS)", granule_table_runs(t.granules),
                               space="pfn")
            for vm in list(t.vms):
                realm = vm.arch.realm
                if realm is not None and snapshot.vm_id(vm) is not None:
                    snapshot.add_table("cca", "RTT", rtt_table_runs(realm), space="gpa", vm=vm)
