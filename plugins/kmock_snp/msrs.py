"""Host-initiated KVM_GET/SET_MSRS of an SEV-ES / SNP vCPU whose VMSA is encrypted.

arch/x86/kvm/svm/svm.c (6.18): svm_get_msr and svm_set_msr start with
``sev_es_prevent_msr_access()``: an SEV-ES guest (SNP included) whose state is protected,
and an MSR whose *write* the vCPU does not intercept (the hardware keeps it in the VMSA),
except MSR_IA32_XSS (the CET series, 6.18, keeps XSS reachable for save/restore). The
access then fails with -EINVAL when the VM type has protected state (KVM_X86_SEV_ES_VM,
KVM_X86_SNP_VM; 0 for the legacy KVM_SEV_ES_INIT on a default VM): KVM_GET/SET_MSRS stop
at that MSR and return the count done (x86.c __msr_io), a refused read reads 0
(kvm_do_msr_access).

Which MSRs are not write-intercepted: svm_recalc_msr_intercepts (the 6.17 rework) for
every SVM vCPU, sev_es_recalc_msr_intercepts for SEV-ES, svm_enable_lbrv (run by
snp_launch_update_vmsa once the VMSA is protected: the LBR MSRs and, for SEV-ES,
DEBUGCTL). kmock's host: LBRV, V_SPEC_CTRL and V_TSC_AUX present (Zen 4 EPYC), no
userspace MSR filter forcing intercepts (a filter is not consulted here: kmock's choice).
"""

from kmock.kvm.x86_state import EBX, ECX, EDX, cpuid_entry, cpuid_has
from kmock.kvm.x86_state import state as x86_state

#: never write-intercepted for an SVM vCPU (svm_recalc_msr_intercepts): STAR,
#: SYSENTER_CS, GS_BASE, FS_BASE, KERNEL_GS_BASE, LSTAR, CSTAR, SYSCALL_MASK
SVM_PASSTHROUGH = frozenset((0xC0000081, 0x174, 0xC0000101, 0xC0000100, 0xC0000102,
                             0xC0000082, 0xC0000083, 0xC0000084))
#: SEV-ES: the GHCB MSR, EFER and PAT (sev_es_recalc_msr_intercepts); the LBR MSRs and
#: DEBUGCTL (svm_enable_lbrv, LBR virtualization is mandatory for SEV-ES)
SEV_ES_PASSTHROUGH = frozenset((0xC0010130, 0xC0000080, 0x277,
                                0x1D9, 0x1DB, 0x1DC, 0x1DD, 0x1DE))
MSR_IA32_XSS = 0xDA0
SYSENTER_ESP_EIP = (0x175, 0x176)
MSR_IA32_SPEC_CTRL = 0x48
MSR_IA32_PRED_CMD = 0x49
MSR_IA32_FLUSH_CMD = 0x10B
MSR_TSC_AUX = 0xC0000103

#: CPUID vendors guest_cpuid_is_intel_compatible() accepts (leaf 0 EBX, EDX, ECX)
_INTEL_COMPATIBLE = (b"GenuineIntel", b"CentaurHauls", b"  Shanghai  ")


def _vendor(entries):
    e = cpuid_entry(entries, 0)
    if e is None:
        return b""
    return b"".join(v.to_bytes(4, "little") for v in (e[4], e[6], e[5]))


def _cpuid_any(entries, *features):
    return any(cpuid_has(entries, *f) for f in features)


def write_intercepted(vcpu, index):
    """msr_write_intercepted() of an SEV-ES vCPU whose VMSA is protected."""
    if index in SVM_PASSTHROUGH or index in SEV_ES_PASSTHROUGH:
        return False
    cpuid = x86_state(vcpu).cpuid
    if index in SYSENTER_ESP_EIP:  # AMD keeps 32 bits of them: intercepted for Intel guests
        return _vendor(cpuid) in _INTEL_COMPATIBLE
    if index == MSR_IA32_SPEC_CTRL:  # V_SPEC_CTRL: !guest_has_spec_ctrl_msr
        return not _cpuid_any(cpuid, (7, 0, EDX, 26), (0x80000008, 0, EBX, 14),
                              (0x80000008, 0, EBX, 15), (0x80000008, 0, EBX, 24))
    if index == MSR_IA32_PRED_CMD:  # !guest_has_pred_cmd_msr
        return not _cpuid_any(cpuid, (7, 0, EDX, 26), (0x80000008, 0, EBX, 12))
    if index == MSR_IA32_FLUSH_CMD:  # !X86_FEATURE_FLUSH_L1D
        return not cpuid_has(cpuid, 7, 0, EDX, 28)
    if index == MSR_TSC_AUX:  # V_TSC_AUX: !RDTSCP && !RDPID
        return not _cpuid_any(cpuid, (0x80000001, 0, EDX, 27), (7, 0, ECX, 22))
    return True


def sev_es_prevent_msr_access(vcpu, index):
    """svm.c sev_es_prevent_msr_access(), for a vCPU of an SEV-ES-family VM type."""
    return (vcpu.arch.guest_state_protected and index != MSR_IA32_XSS
            and not write_intercepted(vcpu, index))
