"""Intel TDX for kmock: the ``tdx`` platform, the KVM_X86_TDX_VM type and the
``linux-6.18-tdx`` profile.

``kmock.Kernel("linux-6.18-tdx")`` or ``kmock.Kernel(<any x86 profile>, platform="tdx")``
offers KVM_X86_TDX_VM (5). Platform settings (Kernel keywords):

``tdx_connect``                 the TDs have TDX Connect with PAGE_RELEASE: a page the TD
                                accepted stays TD-DMA pinned until TDG.MEM.PAGE.RELEASE
                                (default False)
``tdx_connect_precheck``        guest_memfd refuses (EAGAIN) to unmap a TD-DMA-pinned page
                                before anything changes, as the TDX Connect threads ask
                                (default True); False: KVM unmaps, the module's RANGE.BLOCK
                                fails and KVM_BUG_ON kills the VM
``tdx_post_populate_cleanups``  tdx.c after the 6.19 "TDX post-populate cleanups" series
                                (no nr_premapped, the vCPU cmd read before the TD checks,
                                CAPABILITIES not copied back, source_addr 0 refused);
                                default False = 6.16-6.18
``tdx_huge_pages``              private memory may be AUGed at 2M and DEMOTEd on a partial
                                zap (the unmerged huge-page series); upstream maps 4K only
                                (tdx_gmem_private_max_mapping_level), the default False

Modules: ``vmtype`` (what a TD is to the core), ``td`` (per-TD state, the S-EPT kept in step
with KVM's mirror), ``launch`` (KVM_TDX_* sub-commands), ``guest`` (``vcpu.guest.tdx``
actions), ``sept`` (the Secure-EPT over RangeMaps), ``mapgpa`` (MapGPA as KVM runs it),
``status`` (TDX status decoder). Facts and choices: docs/arch/tdx.md.
"""

import dataclasses
import errno
from types import MappingProxyType

from kmock import profiles
from kmock.errors import oserror
from kmock.hookspecs import hookimpl
from kmock.kvm.x86_state import DEFAULTS_618
from kmock.platforms import Platform
from kmock.uapi import kvm as K

from .vmtype import TdxVm

TDX = Platform(
    "tdx", "x86", "Intel TDX: TDX module 1.5 with KVM's TDX support",
    settings=(("tdx_connect", False), ("tdx_connect_precheck", True),
              ("tdx_post_populate_cleanups", False), ("tdx_huge_pages", False)))

#: a TDX host (Sapphire Rapids or later) has VMX TSC scaling: kvm_caps.has_tsc_control, so
#: KVM_CAP_TSC_CONTROL and KVM_CAP_VM_TSC_CONTROL are 1 and max_guest_tsc_khz is
#: min(0xffffffff, tsc_khz * the 64-bit multiplier's range) = 0xffffffff (x86.c
#: kvm_x86_vendor_init); the TD's own rate is fixed at KVM_TDX_INIT_VM (kmock_tdx.launch)
_TSC_CONTROL_CAPS = {60: 1, 214: 1}  # KVM_CAP_TSC_CONTROL, KVM_CAP_VM_TSC_CONTROL

LINUX_6_18_TDX = dataclasses.replace(
    profiles.LINUX_6_18, name="linux-6.18-tdx",
    description="upstream Linux 6.18.y on an Intel TDX host (KVM_X86_TDX_VM)",
    platform="tdx",
    caps=MappingProxyType({**profiles.LINUX_6_18.caps, **_TSC_CONTROL_CAPS}),
    x86_vcpu=MappingProxyType({**(profiles.LINUX_6_18.x86_vcpu or DEFAULTS_618),
                               "tsc_control": True, "max_guest_tsc_khz": 0xFFFFFFFF}))


@hookimpl
def kmock_platforms(kernel):
    return [TDX]


@hookimpl
def kmock_profiles():
    return [LINUX_6_18_TDX]


@hookimpl
def kmock_vm_types(kernel):
    return [TdxVm()]


@hookimpl
def kmock_ioctls(kernel, file_type):
    """On a TDX host the vendor module has vcpu_mem_enc_ioctl: KVM_MEMORY_ENCRYPT_OP on the
    vCPU of a VM that is not a TD is EINVAL (arch/x86/kvm/vmx/main.c vt_vcpu_mem_enc_ioctl,
    !is_td_vcpu), not the core's ENOTTY; a TD's vCPUs get TdxVm's handler."""
    if file_type != "vcpu" or kernel.profile.platform != "tdx":
        return {}
    return {K.KVM_MEMORY_ENCRYPT_OP: _not_a_td_vcpu}


def _not_a_td_vcpu(f, arg):
    f.vm.check_caller()
    raise oserror(errno.EINVAL)


@hookimpl
def kmock_snapshot(kernel, snapshot):
    """Each TD's state and S-EPT counts, and its S-EPT as a gfn-space table (one row per
    run of equal leaves) that ``kmock dump`` lists and draws."""
    tds = []
    for f in kernel.fdtable.files():
        vm = getattr(f, "vm", None)
        if getattr(f, "file_type", None) == "vm" and vm.type == TdxVm.type and vm.arch:
            td = vm.arch
            tds.append({"vm": snapshot.vm_id(vm), "state": td.state, "gpaw": td.gpaw,
                        "connect": td.connect, "sept": {} if td.sept is None else
                        {st.name: n for st, n in td.sept.counts().items()}})
            runs = [] if td.sept is None else \
                [(r.gfn, r.gfn + r.npages, _sept_label(r)) for r in td.sept.runs()]
            snapshot.add_table("tdx", "S-EPT", runs, space="gfn", vm=vm, legend=SEPT_LEGEND)
    if tds:
        snapshot["tdx"]["tds"] = tds


#: the S-EPT table's states (the module's leaf states; "@2M": a 2M leaf)
SEPT_LEGEND = {
    "MAPPED": "accepted by the TD", "PENDING": "AUGed, not accepted yet",
    "BLOCKED": "blocked (zap in progress)", "PENDING_BLOCKED": "pending and blocked",
    "BLOCKEDW": "write-blocked", "PENDING_BLOCKEDW": "pending, write-blocked",
    "REMOVED": "removed"}


def _sept_label(run):
    if run.state == run.state.FREE:
        return 0  # a gap
    return run.state.name + ("@2M" if run.level == 1 else "@1G" if run.level == 2 else "")
