"""The SEV additions to kmock.uapi.kvm and kmock.uapi.sev, against the kernel headers.

Sources: include/uapi/linux/kvm.h (struct kvm_enc_region, KVM_MEMORY_ENCRYPT_REG_REGION
``_IOR(KVMIO, 0xbb, struct kvm_enc_region)``, KVM_MEMORY_ENCRYPT_UNREG_REGION
``_IOR(KVMIO, 0xbc, ...)``, kvm_run's ``fail_entry`` {__u64 hardware_entry_failure_reason;
__u32 cpu;}, KVM_EXIT_AP_RESET_HOLD 32), arch/x86/include/uapi/asm/kvm.h (KVM_X86_GRP_SEV 1,
KVM_X86_SEV_VMSA_FEATURES 0) and arch/x86/include/asm/svm.h (SVM_SEV_FEAT_SECURE_TSC bit 9).
The ioctl numbers are recomputed with the reference's formula (tests/uapi/_layout.py).
"""

import ctypes

import pytest

from kmock.uapi import kvm, sev

from ._layout import field, field_names, ioc

KVMIO = 0xAE
IOC_READ = 2

NUMBERS = [
    ("kvm.h", kvm, "KVM_MEMORY_ENCRYPT_REG_REGION", ioc(IOC_READ, KVMIO, 0xBB, 16)),
    ("kvm.h", kvm, "KVM_MEMORY_ENCRYPT_UNREG_REGION", ioc(IOC_READ, KVMIO, 0xBC, 16)),
    ("kvm.h", kvm, "KVM_EXIT_AP_RESET_HOLD", 32),
    ("kvm.h", kvm, "KVM_EXIT_FAIL_ENTRY", 9),
    ("asm/kvm.h", sev, "KVM_X86_GRP_SEV", 1),
    ("asm/kvm.h", sev, "KVM_X86_SEV_VMSA_FEATURES", 0),
    ("asm/svm.h", sev, "SVM_SEV_FEAT_SECURE_TSC", 1 << 9),
    ("asm/svm.h", sev, "SVM_SEV_FEAT_DEBUG_SWAP", 1 << 5),
]


@pytest.mark.parametrize("source,mod,name,value", NUMBERS, ids=[r[2] for r in NUMBERS])
def test_number(source, mod, name, value):
    assert getattr(mod, name) == value, source


def test_kvm_enc_region_layout():
    assert ctypes.sizeof(kvm.kvm_enc_region) == 16
    assert field_names(kvm.kvm_enc_region) == ("addr", "size")
    assert field(kvm.kvm_enc_region, "addr") == (0, 8)
    assert field(kvm.kvm_enc_region, "size") == (8, 8)


def test_fail_entry_in_kvm_run():
    # the exit union starts at offset 32 of kvm_run; fail_entry is 8 + 4 (+ 4 padding)
    assert ctypes.sizeof(kvm.kvm_run_fail_entry) == 16
    assert field(kvm.kvm_run, "exit.fail_entry.hardware_entry_failure_reason") == (32, 8)
    assert field(kvm.kvm_run, "exit.fail_entry.cpu") == (40, 4)
    assert ctypes.sizeof(kvm.kvm_run_exit) == 256  # adding the member changed nothing
    run = kvm.kvm_run()
    run.fail_entry.hardware_entry_failure_reason = 0xFFFFFFFF
    raw = bytes(run)
    assert int.from_bytes(raw[32:40], "little") == 0xFFFFFFFF


def test_one_definition():
    """kmock.uapi.sev re-exports kvm.h's SEV ioctls; the plugin defines none of its own."""
    assert sev.kvm_enc_region is kvm.kvm_enc_region
    assert sev.KVM_MEMORY_ENCRYPT_REG_REGION == kvm.KVM_MEMORY_ENCRYPT_REG_REGION
    import kmock_snp.guest
    import kmock_snp.launch
    import kmock_snp.regions
    import kmock_snp.vmtypes

    for mod in (kmock_snp.regions, kmock_snp.vmtypes, kmock_snp.guest, kmock_snp.launch):
        for name in ("kvm_enc_region", "kvm_run_fail_entry"):
            obj = getattr(mod, name, None)
            assert obj is None or obj is getattr(kvm, name), (mod.__name__, name)
        assert getattr(mod, "KVM_EXIT_AP_RESET_HOLD", 32) == 32
        assert "SVM_SEV_FEAT_SECURE_TSC" not in vars(mod)
