"""KVM_TDX_INIT_VCPU's x2APIC requirement and what it leaves behind, KVM_SET_CPUID2 on a TD
vCPU (the core's kvm_set_cpuid), and KVM_CAP_READONLY_MEM on a TD.

Sources (Linux 6.16-6.18 arch/x86/kvm/vmx/tdx.c, ``tdx_vcpu_init``): after the flags and
"already initialised" checks, ``kvm_apic_set_base(vcpu, APIC_DEFAULT_PHYS_BASE |
LAPIC_MODE_X2APIC | (kvm_vcpu_is_reset_bsp(vcpu) ? MSR_IA32_APICBASE_BSP : 0), true)``
failing is -EINVAL ("TDX requires X2APIC, userspace is responsible for configuring guest
CPUID accordingly"); kvm_apic_set_base (lapic.c) makes X2APIC_ENABLE a reserved bit unless
the guest CPUID has X2APIC. ``tdx_td_vcpu_init`` then sets mp_state RUNNABLE.
"""

import errno

from kmock.testing.conformance_vcpu import msrs_buf, msrs_values
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T
from kmock.uapi import x86 as X

from ._td import GPA, P, Td, cmd, err

ENC = K.KVM_MEMORY_ENCRYPT_OP
MSR_IA32_APICBASE = 0x1B



def _td(k, nvcpus=2):
    t = Td(k, nvcpus=nvcpus)
    t.capabilities()
    t.split_irqchip()
    t.init_vm()
    return t


def _apic_base(k, fd):
    buf = msrs_buf([(MSR_IA32_APICBASE, 0)])
    assert k.ioctl(fd, X.KVM_GET_MSRS, buf) == 1
    return msrs_values(buf, 1)[0]


def test_init_vcpu_without_x2apic_in_the_cpuid_is_einval(tdx_kernel):
    """No KVM_SET_CPUID2 yet, or one without CPUID.1:ECX[21]: kvm_apic_set_base refuses the
    x2APIC base, INIT_VCPU is EINVAL and the vCPU stays uninitialised (a later INIT_VCPU
    after a proper KVM_SET_CPUID2 works; KVM_RUN before it is EINVAL)."""
    k = tdx_kernel()
    t = _td(k, 1)
    v = k.ioctl(t.vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_INIT_VCPU)) == errno.EINVAL
    t.set_cpuid(v, x2apic=False)
    assert err(k.ioctl, v, ENC, cmd(T.KVM_TDX_INIT_VCPU)) == errno.EINVAL
    assert not k.vm(t.vm).vcpus[0].arch.initialized
    assert _apic_base(k, v) == 0xFEE00900  # untouched: xAPIC, enabled, BSP
    t.set_cpuid(v)
    k.ioctl(v, ENC, cmd(T.KVM_TDX_INIT_VCPU, 7))
    assert k.vm(t.vm).vcpus[0].arch.rcx == 7


def test_init_vcpu_switches_the_apic_to_x2apic_and_the_vcpu_to_runnable(tdx_kernel):
    """The BSP (vcpu_id == bsp_vcpu_id) gets 0xFEE00D00, an AP 0xFEE00C00, read back with
    KVM_GET_MSRS(APIC_BASE), which tdx_has_emulated_msr lets through; both are RUNNABLE."""
    k = tdx_kernel()
    t = _td(k)
    t.create_vcpus()
    assert _apic_base(k, t.vcpus[0]) == 0xFEE00D00
    assert _apic_base(k, t.vcpus[1]) == 0xFEE00C00
    for fd in t.vcpus:
        mp = X.kvm_mp_state(0xFF)
        k.ioctl(fd, X.KVM_GET_MP_STATE, mp)
        assert mp.mp_state == X.KVM_MP_STATE_RUNNABLE


def test_boot_cpu_id_decides_which_vcpu_gets_the_bsp_bit(tdx_kernel):
    """kvm_vcpu_is_reset_bsp compares with kvm->arch.bsp_vcpu_id (KVM_SET_BOOT_CPU_ID)."""
    k = tdx_kernel()
    t = _td(k)
    k.ioctl(t.vm, K.KVM_SET_BOOT_CPU_ID, 1)
    t.create_vcpus()
    assert _apic_base(k, t.vcpus[0]) == 0xFEE00C00
    assert _apic_base(k, t.vcpus[1]) == 0xFEE00D00


def test_get_cpuid_reports_x2apic_so_qemus_order_works(tdx_kernel):
    """KVM_TDX_GET_CPUID's leaf 1 has X2APIC (the TDX module virtualizes the x2APIC only),
    so GET_CPUID -> KVM_SET_CPUID2 -> INIT_VCPU (QEMU's order) succeeds."""
    k = tdx_kernel()
    t = _td(k, 1)
    v = k.ioctl(t.vm, K.KVM_CREATE_VCPU, 0)
    cp = t.get_cpuid(v)
    leaf1 = [cp.entries[i] for i in range(cp.hdr.nent) if cp.entries[i].function == 1]
    assert leaf1 and leaf1[0].ecx & (1 << 21)


def test_set_cpuid2_is_the_cores_after_the_vcpu_ran(tdx_kernel):
    """KVM_SET_CPUID2 on a TD vCPU is x86.c's kvm_set_cpuid (vt_vcpu_after_set_cpuid does
    nothing for a TD): E2BIG beyond KVM_MAX_CPUID_ENTRIES, and after the vCPU has run only
    the identical table (EINVAL otherwise)."""
    k = tdx_kernel()
    t = Td(k).launch()
    big = T.with_cpuid_entries(K.kvm_cpuid2, 1)()
    big.hdr.nent = T.KVM_MAX_CPUID_ENTRIES + 1
    assert err(k.ioctl, t.vcpu, T.KVM_SET_CPUID2, bytes(big)) == errno.E2BIG
    t.guest().tdx.map_gpa(GPA | t.shared, P)  # the vCPU runs: a MapGPA exit
    assert t.run() == K.KVM_EXIT_HYPERCALL
    cp = T.with_cpuid_entries(K.kvm_cpuid2, 8)()
    cp.hdr.nent = 8
    k.ioctl(t.vcpu, X.KVM_GET_CPUID2, cp)
    table = bytes(cp)[:8 + cp.hdr.nent * 40]
    k.ioctl(t.vcpu, T.KVM_SET_CPUID2, table)  # the same table: accepted
    cp.entries[0].eax ^= 1
    assert err(k.ioctl, t.vcpu, T.KVM_SET_CPUID2, bytes(cp)[:len(table)]) == errno.EINVAL


def test_readonly_mem_is_not_offered_on_a_td(tdx_kernel):
    """KVM_CAP_READONLY_MEM on the VM fd is kvm_arch_has_readonly_mem(kvm) =
    !has_protected_state: 0 for a TD, 1 for a DEFAULT VM of the same kernel (x86.c
    kvm_vm_ioctl_check_extension)."""
    import os

    k = tdx_kernel()
    t = Td(k)
    assert k.ioctl(t.vm, K.KVM_CHECK_EXTENSION, 81) == 0
    vm = k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, 0)
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, 81) == 1
