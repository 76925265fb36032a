"""/dev/kvm KVM_GET_DEVICE_ATTR / KVM_HAS_DEVICE_ATTR for group KVM_X86_GRP_SEV.

Sources (Linux 6.18): arch/x86/kvm/x86.c __kvm_x86_dev_get_attr (group 0 is KVM's own,
any other group goes to kvm_x86_ops.dev_get_attr, ENXIO without one), kvm_x86_dev_get_attr
(the value put_user'd to ``addr``: EFAULT), kvm_x86_dev_has_attr (the same errno, ``addr``
untouched); arch/x86/kvm/svm/sev.c sev_dev_get_attr (group != KVM_X86_GRP_SEV -> ENXIO,
KVM_X86_SEV_VMSA_FEATURES -> sev_supported_vmsa_features, else ENXIO) and
sev_hardware_setup (DEBUG_SWAP, and SECURE_TSC for SNP hosts that have it);
Documentation/virt/kvm/x86/amd-memory-encryption.rst (KVM_SEV_INIT2: "the supported
vmsa_features can be queried via KVM_GET_DEVICE_ATTR on /dev/kvm").
"""

import ctypes
import errno
import os

import pytest

import kmock
import kmock_snp
from kmock.errors import PluginError
from kmock.hookspecs import hookimpl
from kmock.uapi import sev as S
from kmock.uapi import x86 as X

from .snpenv import kernel


def _attr(k, req, group, attr, addr=None):
    out = ctypes.c_uint64(0xDEAD)
    a = X.kvm_device_attr(group=group, attr=attr,
                          addr=ctypes.addressof(out) if addr is None else addr)
    kvm = k.open("/dev/kvm", os.O_RDWR)
    try:
        return k.ioctl(kvm, req, a), out.value
    except OSError as e:
        return e.errno, out.value
    finally:
        k.close(kvm)


@pytest.mark.parametrize("debug_swap,secure_tsc,want", [
    (True, True, S.SVM_SEV_FEAT_DEBUG_SWAP | S.SVM_SEV_FEAT_SECURE_TSC),
    (True, False, S.SVM_SEV_FEAT_DEBUG_SWAP),
    (False, False, 0),
])
def test_vmsa_features(debug_swap, secure_tsc, want):
    k = kernel(snp_debug_swap=debug_swap, snp_secure_tsc=secure_tsc)
    got = _attr(k, X.KVM_GET_DEVICE_ATTR, S.KVM_X86_GRP_SEV, S.KVM_X86_SEV_VMSA_FEATURES)
    assert got == (0, want) and want == kmock_snp.supported_vmsa_features(k)
    # HAS: 0, addr untouched
    assert _attr(k, X.KVM_HAS_DEVICE_ATTR, S.KVM_X86_GRP_SEV, 0) == (0, 0xDEAD)


def test_what_init2_accepts_is_what_the_attribute_says():
    """QEMU's order: read the attribute, pass those features to KVM_SEV_INIT2."""
    from .snpenv import Snp

    s = Snp(npages=4)
    _, feats = _attr(s.k, X.KVM_GET_DEVICE_ATTR, S.KVM_X86_GRP_SEV, 0)
    assert s.init2(vmsa_features=feats)[1] == 0


def test_errors():
    k = kernel()
    # sev_dev_get_attr: an unknown attribute (6.18 has no KVM_X86_SNP_POLICY_BITS = 1)
    for req in (X.KVM_GET_DEVICE_ATTR, X.KVM_HAS_DEVICE_ATTR):
        assert _attr(k, req, S.KVM_X86_GRP_SEV, 1)[0] == errno.ENXIO
        assert _attr(k, req, 2, 0)[0] == errno.ENXIO  # a group nobody answers
    # kvm_x86_dev_get_attr: the value cannot be stored -> EFAULT; HAS never writes
    assert _attr(k, X.KVM_GET_DEVICE_ATTR, S.KVM_X86_GRP_SEV, 0, addr=8)[0] == errno.EFAULT
    assert _attr(k, X.KVM_HAS_DEVICE_ATTR, S.KVM_X86_GRP_SEV, 0, addr=8)[0] == 0
    # group 0 stays the core's: XCOMP_GUEST_SUPP answers, attribute 1 is ENXIO
    assert _attr(k, X.KVM_GET_DEVICE_ATTR, 0, X.KVM_X86_XCOMP_GUEST_SUPP)[0] == 0
    assert _attr(k, X.KVM_GET_DEVICE_ATTR, 0, 1)[0] == errno.ENXIO


def test_no_sev_group_off_the_snp_platform():
    """A kernel without SEV (VMX, or SVM without CONFIG_KVM_AMD_SEV): ENXIO."""
    k = kmock.Kernel("linux-6.18", plugins=[kmock_snp])
    for req in (X.KVM_GET_DEVICE_ATTR, X.KVM_HAS_DEVICE_ATTR):
        assert _attr(k, req, S.KVM_X86_GRP_SEV, S.KVM_X86_SEV_VMSA_FEATURES)[0] == errno.ENXIO


class _Group0:
    @hookimpl
    def kmock_dev_attr_groups(self, kernel):
        return {0: lambda k, a: 1}


class _SevAgain:
    @hookimpl
    def kmock_dev_attr_groups(self, kernel):
        return {S.KVM_X86_GRP_SEV: lambda k, a: 1}


@pytest.mark.parametrize("bad,words", [(_Group0(), "group other than 0"),
                                       (_SevAgain(), "already answered")])
def test_contract_refuses_group_0_and_a_second_owner(bad, words):
    with pytest.raises(PluginError, match=words):
        kmock.Kernel("linux-6.18-snp", plugins=[kmock_snp, bad])
