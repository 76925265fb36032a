"""Which revision of the CCA KVM series a Kernel models, as platform settings.

The ``cca`` platform declares these settings (``kmock.Kernel("linux-arm64-cca",
cca_revision="v12")``):

``cca_revision``          "v14" (default), "v13", "v12" or "v15" (unconfirmed): the
                          numbers and errnos that moved (kmock.uapi.cca.REVISIONS)
``cca_cap_arm_rmi``       KVM_CAP_ARM_RMI's number, None = the revision's
``cca_vm_type_realm``     KVM_VM_TYPE_ARM_REALM, None = the revision's
``cca_populate_non_realm_errno``  POPULATE on a VM that is not a realm, None = the
                          revision's (v12 EPERM, v14 ENXIO)
``cca_rmi_available``     kvm_rmi_is_available (an RMM answered at boot)
``cca_rmm_ipa_limit``     the RMM's S2SZ: the largest IPA size of a realm
``cca_ripas_refusal``     how a VMM refuses a realm's RIPAS RAM request: "none" (v14:
                          there is no way; KVM changes RIPAS whatever the attributes
                          say) or "attributes" (a kmock extension: KVM stops
                          RTT_SET_RIPAS at the first gfn the VMM left shared and
                          answers REJECT from there, as the RMM's RIPAS_RESPONSE allows)
"""

from dataclasses import dataclass

from kmock.errors import KmockUsageError
from kmock.uapi import cca as C

SETTINGS = (
    ("cca_revision", C.DEFAULT_REVISION),
    ("cca_cap_arm_rmi", None),
    ("cca_vm_type_realm", None),
    ("cca_populate_non_realm_errno", None),
    ("cca_rmi_available", True),
    ("cca_rmm_ipa_limit", 48),
    ("cca_ripas_refusal", "none"),
)


@dataclass(frozen=True)
class Series:
    revision: str
    cap_arm_rmi: int
    vm_type_realm: int
    populate: int
    psci_complete: int
    populate_inout: bool
    populate_checks_source_alignment: bool
    populate_non_realm_errno: int
    irqchip_check_before_create: bool
    rmm_version: str
    rmi_available: bool
    rmm_ipa_limit: int
    ripas_refusal: str

    @property
    def init_ripas_skips_assigned_ram(self):
        """RMM 1.0 (v12) stops INIT_RIPAS at populated pages; v2.0 must not (rtt.Realm)."""
        return self.rmm_version != "1.0"


def series_of(kernel):
    """The Series the Kernel's settings select."""
    rev = kernel.setting("cca_revision")
    if rev not in C.REVISIONS:
        raise KmockUsageError(f"cca_revision must be one of {sorted(C.REVISIONS)}, not {rev!r}")
    r = C.REVISIONS[rev]
    refusal = kernel.setting("cca_ripas_refusal")
    if refusal not in ("none", "attributes"):
        raise KmockUsageError("cca_ripas_refusal must be 'none' or 'attributes'")

    def pick(name, key):
        v = kernel.setting(name)
        return r[key] if v is None else v

    return Series(
        revision=rev,
        cap_arm_rmi=pick("cca_cap_arm_rmi", "KVM_CAP_ARM_RMI"),
        vm_type_realm=pick("cca_vm_type_realm", "KVM_VM_TYPE_ARM_REALM"),
        populate=r["KVM_ARM_RMI_POPULATE"],
        psci_complete=r["KVM_ARM_VCPU_RMI_PSCI_COMPLETE"],
        populate_inout=r["populate_inout"],
        populate_checks_source_alignment=r["populate_checks_source_alignment"],
        populate_non_realm_errno=pick("cca_populate_non_realm_errno", "populate_non_realm_errno"),
        irqchip_check_before_create=r["irqchip_check_before_create"],
        rmm_version=r["rmm_version"],
        rmi_available=bool(kernel.setting("cca_rmi_available")),
        rmm_ipa_limit=int(kernel.setting("cca_rmm_ipa_limit")),
        ripas_refusal=refusal,
    )
