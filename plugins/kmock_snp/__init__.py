"""AMD SEV-SNP for kmock: the ``snp`` platform, the ``linux-6.18-snp`` profile, /dev/sev,
the SEV-family VM types with the SNP launch UAPI, the RMP, the guest's PVALIDATE and
page-state changes, and what the RMP refuses (docs/arch/snp.md).

Modules: ``rmp`` (the RMP keyed by host frame), ``psc`` (GHCB page-state changes as KVM
turns them into exits), ``launch`` (KVM_MEMORY_ENCRYPT_OP sub-commands), ``vmtypes`` (the
VM types and their memory/access callbacks), ``guest`` (``vcpu.guest.snp``), ``sevdev``
(/dev/sev), ``state`` (per-machine, per-VM and per-vCPU state). ``machine(kernel)`` gives
a test the machine's RMP and firmware failure injection (``fail_next``).
"""

import dataclasses

from kmock.hookspecs import hookimpl
from kmock.platforms import Platform
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from . import svm_ops
from .launch import sev_dev_get_attr, supported_vmsa_features  # noqa: F401 (public face)
from .sevdev import open_sev
from .state import machine  # the plugin's public face for tests
from .vmtypes import vm_types

PLATFORM = Platform(
    "snp", "x86", "AMD EPYC with SEV-SNP: the RMP, the PSP firmware, /dev/sev",
    settings=(
        # SEV (2) and SEV-ES (3) exist as the host reports them (ASIDs configured, the
        # firmware's SEV support): both by default, as on a default EPYC host
        ("sev_vm_types", (K.KVM_X86_SEV_VM, K.KVM_X86_SEV_ES_VM)),
        # ASIDs: SEV-ES/SNP ones are [1, min_sev_asid), SEV ones above (sev_hardware_setup)
        ("snp_asids", 99),
        ("sev_asids", 410),
        # the host has DEBUG_SWAP (valid_vmsa_features for SEV-ES/SNP)
        ("snp_debug_swap", True),
        # the host has SNP Secure TSC (Genoa and later): INIT2 accepts SECURE_TSC for SNP
        ("snp_secure_tsc", True),
        # policy bits SNP_LAUNCH_START accepts: 6.18's SNP_POLICY_MASK_VALID; newer kernels
        # ask the firmware (snp_supported_policy_bits)
        ("snp_supported_policy", S.SNP_POLICY_MASK_VALID),
        # the host as the PSP sees it when it judges the guest policy: SMT enabled in the
        # BIOS (policy SMT = 0 -> LAUNCH_START POLICY_FAILURE), the socket count
        # (SINGLE_SOCKET on > 1 -> SNP_ACTIVATE POLICY_FAILURE), the firmware ABI
        # (major, minor) a policy may require at most
        ("snp_host_smt", True),
        ("snp_sockets", 1),
        ("snp_fw_api", (1, 55)),
        # a second SNP_LAUNCH_FINISH with vCPUs: 6.18 writes the guest-owned VMSA and
        # oopses ("oops"); the proposed fix answers EINVAL ("einval")
        ("snp_finish_twice", "oops"),
        # the C-bit position (CPUID 0x8000001F EBX[5:0]; sev_enc_bit in sev.c): 51 on
        # Milan / Genoa, reported by the GHCB MSR SEV_INFO response
        ("sev_enc_bit", 51),
        # gmem in-place conversion (v8): SNP_LAUNCH_UPDATE with uaddr 0 takes the bytes the
        # page already holds [U: series behaviour]
        ("snp_populate_in_place", True),
        # whether a guest C=0 *read* of an assigned page is an NPF (writes always are) [U]
        ("snp_shared_read_checked", False),
    ))


@hookimpl
def kmock_platforms(kernel):
    return [PLATFORM]


@hookimpl
def kmock_profiles():
    from kmock import profiles

    return [dataclasses.replace(profiles.LINUX_6_18, name="linux-6.18-snp", platform="snp",
                                description="upstream Linux 6.18.y on an AMD EPYC host with SEV-SNP")]


@hookimpl
def kmock_vm_types(kernel):
    return vm_types(kernel)


@hookimpl
def kmock_ioctls(kernel, file_type):
    """sev_mem_enc_ioctl and the region ioctls reach every VM of an SEV host, also the
    DEFAULT ones (kmock_snp.svm_ops); the SEV-family types carry the same table."""
    if kernel.profile.platform != "snp" or file_type != "vm":
        return {}
    return svm_ops.vm_ioctls()


@hookimpl
def kmock_dev_attr_groups(kernel):
    """/dev/kvm's KVM_X86_GRP_SEV (sev_dev_get_attr) exists only where SVM has SEV; on
    other platforms the group stays ENXIO, as for a kernel without SEV."""
    if kernel.profile.platform != "snp":
        return {}
    return {S.KVM_X86_GRP_SEV: sev_dev_get_attr}


@hookimpl
def kmock_devices(kernel):
    if kernel.profile.platform != "snp":
        return {}
    return {"/dev/sev": open_sev}


@hookimpl
def kmock_snapshot(kernel, snapshot):
    if kernel.profile.platform != "snp":
        return
    m = machine(kernel)
    runs = [r for r in m.rmp.runs() if r.entry.assigned or r.entry.leaked]
    snapshot["snp"] = {
        "rmp": [(r.start, r.end, str(r.entry)) for r in runs if r.entry.assigned],
        "leaked_frames": m.rmp.leaked_count(),
    }
    # the RMP by host frame (the frame space of kernel.physmem), one run per equal state
    snapshot.add_table("snp", "RMP", [(r.start, r.end, rmp_state(r.entry)) for r in runs],
                       space="pfn", legend=RMP_LEGEND)


#: the RMP table's states in ``kmock dump`` (owner, then the flags that matter)
RMP_LEGEND = {
    "guest": "guest-owned, not validated",
    "guest+v": "guest-owned, validated",
    "pre-guest": "pre-guest (launch, immutable)",
    "vmsa": "guest VMSA",
    "firmware": "firmware-owned",
    "leaked": "leaked (snp_leak_pages: never reused)",
}


def rmp_state(entry):
    """The short state of an RMP entry in the snapshot's RMP table."""
    if entry.leaked:
        return "leaked"
    if not entry.assigned:
        return ""
    if entry.vmsa:
        return "vmsa"
    owner = entry.owner
    if owner == "guest":
        return "guest+v" if entry.validated else "guest"
    return owner
