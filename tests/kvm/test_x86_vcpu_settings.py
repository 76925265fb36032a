"""The per-host x86 vCPU settings the host profile probes (kmock.kvm.x86_vcpu.probe_host)
and their upstream Linux 6.18 defaults on the linux-6.18 profile.

tests/conformance/test_differential_vcpu.py compares the probed host with this machine's
real kernel (a PVM host: RFLAGS.VM dropped, the interrupt shadow kept whole, no
CONFIG_KVM_SMM, CR4 not restricted by the guest's CPUID). Here the upstream side, from
arch/x86/kvm/x86.c (__set_regs, kvm_vcpu_ioctl_x86_set_vcpu_events, kvm_set_msr_common,
__kvm_is_valid_cr4 with cr4_guest_rsvd_bits) and vmx.c (vmx_set_rflags,
vmx_set_interrupt_shadow).
"""

import dataclasses
import errno
import os
from types import MappingProxyType

import pytest

import kmock
from kmock.kvm.x86_state import DEFAULTS_618
from kmock.profiles import get as get_profile
from kmock.testing.conformance_vcpu import cpuid_table, msrs_buf, msrs_values
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from .test_x86_vcpu_state import err

#: leaf 7 with FSGSBASE and TSC_ADJUST (EBX bits 0, 1) and ARCH_CAPABILITIES (EDX bit 29): the
#: linux-6.18 profile's own leaf 7 is empty
LEAF7 = (7, 0, 1, 0, 0b11, 0, 1 << 29)
LINUX_6_18 = get_profile("linux-6.18")
LINUX_6_18 = dataclasses.replace(
    LINUX_6_18, name="linux-6.18-leaf7",
    cpuid=tuple(LEAF7 if (e[0], e[1]) == (7, 0) else e for e in LINUX_6_18.cpuid))


def kernel(**settings):
    prof = dataclasses.replace(LINUX_6_18, name="settings", x86_vcpu=MappingProxyType(
        {**DEFAULTS_618, **settings}))
    return kmock.Kernel(prof)


def vcpu(k, cpuid=None, irqchip=False):
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    if irqchip:
        k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    if cpuid is not None:
        k.ioctl(cpu, X.KVM_SET_CPUID2, cpuid_table(cpuid))
    return cpu


def without(cpuid, fn, index, reg, bit):
    return [e if (e[0], e[1]) != (fn, index) else
            e[:3 + reg] + (e[3 + reg] & ~(1 << bit),) + e[4 + reg:] for e in cpuid]


# --- RFLAGS ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kept,want", [((1 << 64) - 1, (1 << 64) - 1),
                                       (0xFFFFFFFFFFFDFFFF, 0xFFFFFFFFFFFDFFFF)])
def test_set_regs_keeps_rflags_as_the_host_does(kept, want):
    with kernel(rflags_kept=kept) as k:
        cpu = vcpu(k)
        r = K.kvm_regs(rflags=(1 << 64) - 1)
        k.ioctl(cpu, K.KVM_SET_REGS, r)
        k.ioctl(cpu, K.KVM_GET_REGS, r)
        assert r.rflags == want
        k.ioctl(cpu, K.KVM_SET_REGS, K.kvm_regs(rflags=0))
        k.ioctl(cpu, K.KVM_GET_REGS, r)
        assert r.rflags == 2  # X86_EFLAGS_FIXED


# --- KVM_SET_VCPU_EVENTS: the interrupt shadow and SMM ---------------------------------------------


def events(k, cpu):
    e = X.kvm_vcpu_events()
    k.ioctl(cpu, X.KVM_GET_VCPU_EVENTS, e)
    return e


@pytest.mark.parametrize("mask", [3, 0xFF])
def test_interrupt_shadow_through_the_host_mask(mask):
    with kernel(shadow_mask=mask) as k:
        cpu = vcpu(k)
        e = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_SHADOW)
        e.interrupt.shadow = 0xFE
        k.ioctl(cpu, X.KVM_SET_VCPU_EVENTS, e)
        assert events(k, cpu).interrupt.shadow == 0xFE & mask


def test_smi_pending_with_config_kvm_smm():
    with kernel() as k:  # the upstream default: CONFIG_KVM_SMM=y
        cpu = vcpu(k)
        e = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_SMM)
        e.smi.pending = 1
        assert k.ioctl(cpu, X.KVM_SET_VCPU_EVENTS, e) == 0
        assert events(k, cpu).smi.pending == 1


@pytest.mark.parametrize("field", ["smm", "pending", "smm_inside_nmi"])
def test_without_config_kvm_smm_the_rest_is_written_first(field):
    """The #else branch of kvm_vcpu_ioctl_x86_set_vcpu_events: EINVAL after the exception,
    interrupt and NMI state were stored."""
    with kernel(kvm_smm=False) as k:
        cpu = vcpu(k)
        e = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_SMM)
        e.exception.injected, e.exception.nr = 1, 13
        e.interrupt.nr, e.nmi.masked = 0x33, 1
        setattr(e.smi, field, 1)
        assert err(k.ioctl, cpu, X.KVM_SET_VCPU_EVENTS, e) == errno.EINVAL
        got = events(k, cpu)
        assert (got.exception.injected, got.exception.nr, got.interrupt.nr, got.nmi.masked) == \
            (1, 13, 0x33, 1)
        assert (got.smi.smm, got.smi.pending) == (0, 0)
        e.smi = X.kvm_vcpu_events().smi  # latched_init only: accepted
        e.smi.latched_init = 1
        assert k.ioctl(cpu, X.KVM_SET_VCPU_EVENTS, e) == 0


def test_smi_refused_before_anything_while_init_received():
    """"INITs are latched while in SMM": smi.smm or smi.pending with the vCPU in
    INIT_RECEIVED is EINVAL before any state is written."""
    with kernel() as k:
        cpu = vcpu(k, irqchip=True)
        k.ioctl(cpu, X.KVM_SET_MP_STATE, X.kvm_mp_state(X.KVM_MP_STATE_INIT_RECEIVED))
        e = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_SMM)
        e.interrupt.nr = 0x44
        e.smi.pending = 1
        assert err(k.ioctl, cpu, X.KVM_SET_VCPU_EVENTS, e) == errno.EINVAL
        assert events(k, cpu).interrupt.nr == 0


# --- CR4 and the guest's CPUID -----------------------------------------------------------------


@pytest.mark.parametrize("guest_rsvd,ok", [(True, False), (False, True)])
def test_cr4_feature_bits_follow_the_guest_cpuid_upstream(guest_rsvd, ok):
    """cr4_guest_rsvd_bits (kvm_vcpu_after_set_cpuid): FSGSBASE without CPUID.7.0:EBX[0] is
    reserved upstream; the PVM probe host does not look at the guest's CPUID."""
    with kernel(cr4_guest_rsvd=guest_rsvd) as k:
        cpu = vcpu(k, without(k.profile.cpuid, 7, 0, 1, 0))
        s = X.kvm_sregs()
        k.ioctl(cpu, X.KVM_GET_SREGS, s)
        s.cr4 = 1 << 16
        if ok:
            assert k.ioctl(cpu, X.KVM_SET_SREGS, s) == 0
        else:
            assert err(k.ioctl, cpu, X.KVM_SET_SREGS, s) == errno.EINVAL
        s.cr4 = 1 << 9  # OSFXSR: no CPUID feature behind it
        assert k.ioctl(cpu, X.KVM_SET_SREGS, s) == 0


# --- MSRs ----------------------------------------------------------------------------------------


def msr(k, cpu, index, data=None):
    buf = bytearray(24)
    buf[0:4] = (1).to_bytes(4, "little")
    buf[8:12] = index.to_bytes(4, "little")
    if data is not None:
        buf[16:24] = data.to_bytes(8, "little")
        return k.ioctl(cpu, X.KVM_SET_MSRS, buf)
    k.ioctl(cpu, X.KVM_GET_MSRS, buf)
    return int.from_bytes(buf[16:24], "little")


def test_arch_capabilities_takes_any_value_when_the_guest_has_it(k):
    cpu = vcpu(k, k.profile.cpuid)
    assert msr(k, cpu, 0x10A, 1 << 63) == 1
    assert msr(k, cpu, 0x10A) == 1 << 63
    cpu2 = vcpu(k, without(k.profile.cpuid, 7, 0, 3, 29))
    assert msr(k, cpu2, 0x10A, 1 << 63) == 0  # KVM_MSR_RET_UNSUPPORTED: only 0 is taken
    assert msr(k, cpu2, 0x10A, 0) == 1


def test_tsc_adjust_sticks_only_with_the_cpuid_bit(k):
    cpu = vcpu(k, k.profile.cpuid)
    assert msr(k, cpu, 0x3B, 0x1234) == 1
    assert msr(k, cpu, 0x3B) == 0x1234
    cpu2 = vcpu(k, without(k.profile.cpuid, 7, 0, 1, 1))
    assert msr(k, cpu2, 0x3B, 0x1234) == 1  # accepted and dropped
    assert msr(k, cpu2, 0x3B) == 0


@pytest.fixture
def k():
    with kernel() as kernel_:
        yield kernel_


# --- KVM_SMI and the dynamic XSAVE features of KVM_SET_CPUID2 -----------------------------------


@pytest.mark.parametrize("smm", [True, False])
def test_kvm_smi(smm):
    """kvm_inject_smi (smm.h): KVM_REQ_SMI, seen as smi.pending by KVM_GET_VCPU_EVENTS
    (process_smi); without CONFIG_KVM_SMM it is -ENOTTY (conformance: the probe host)."""
    with kernel(kvm_smm=smm) as k:
        cpu = vcpu(k)
        if smm:
            assert k.ioctl(cpu, X.KVM_SMI, 0) == 0
            assert events(k, cpu).smi.pending == 1
        else:
            assert err(k.ioctl, cpu, X.KVM_SMI, 0) == errno.ENOTTY
            assert events(k, cpu).smi.pending == 0


def test_amx_tile_data_in_cpuid_needs_the_guest_permission(k, monkeypatch):
    """kvm_check_cpuid -> fpu_enable_guest_xfd_features: leaf 0xD.0 with XTILE_DATA (bit
    18) is EPERM unless the process holds ARCH_REQ_XCOMP_GUEST_PERM for it; nothing is
    stored then."""
    from kmock import _libc

    leaf = [(0xD, 0, 1, 0x3 | 1 << 18, 0, 0, 0)]
    monkeypatch.setattr(_libc, "guest_xcomp_perm", lambda: 0x3)
    cpu = vcpu(k)
    assert err(k.ioctl, cpu, X.KVM_SET_CPUID2, cpuid_table(leaf)) == errno.EPERM
    monkeypatch.setattr(_libc, "guest_xcomp_perm", lambda: 0x3 | 1 << 18)
    assert k.ioctl(cpu, X.KVM_SET_CPUID2, cpuid_table(leaf)) == 0
    monkeypatch.setattr(_libc, "guest_xcomp_perm", lambda: None)  # a kmock serve client
    assert k.ioctl(vcpu(k), X.KVM_SET_CPUID2, cpuid_table(leaf)) == 0


def test_cpuid_is_frozen_once_the_guest_was_entered_even_without_an_exit(k):
    """kvm_set_cpuid after kvm_vcpu_has_run (last_vmentry_cpu != -1) takes only the same
    table (EINVAL otherwise). A KVM_RUN that entered the guest counts even when it ended on
    a signal (EINTR) rather than an exit to userspace; one refused before the guest ran
    (immediate_exit) does not."""
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    run = K.kvm_run.from_address(k.mmap(cpu, 4096, 3, 1, 0).address)
    table = cpuid_table([(1, 0, 0, 0, 0, 0, 0)])
    run.immediate_exit = 1
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EINTR
    run.immediate_exit = 0
    assert k.ioctl(cpu, X.KVM_SET_CPUID2, table) == 0  # not entered yet: any table
    k.vm(vm).vcpus[0].guest.stop()  # a signal arrives while the guest runs
    assert err(k.ioctl, cpu, K.KVM_RUN, 0) == errno.EINTR
    assert k.ioctl(cpu, X.KVM_SET_CPUID2, table) == 0  # the same table: accepted
    other = cpuid_table([(1, 0, 0, 1, 0, 0, 0)])
    assert err(k.ioctl, cpu, X.KVM_SET_CPUID2, other) == errno.EINVAL


# --- KVM_SET/GET_XSAVE (fpu_copy_uabi_to_guest_fpstate, __copy_xstate_to_uabi_buf) ------------


def xsave(k, cpu, edits=()):
    buf = bytearray(4096)
    k.ioctl(cpu, X.KVM_GET_XSAVE, buf)
    for off, value in edits:
        buf[off:off + 4] = value.to_bytes(4, "little")
    return buf


def test_get_xsave_reports_only_what_the_guest_cpuid_supports(k):
    """KVM_GET_XSAVE passes guest_supported_xcr0: XSTATE_BV keeps FP and SSE and the
    components of the guest's CPUID leaf 0xD (none before KVM_SET_CPUID2); probed."""
    cpu = vcpu(k)
    k.ioctl(cpu, X.KVM_SET_XSAVE, xsave(k, cpu, [(512, 0x7)]))  # FP | SSE | YMM
    assert xsave(k, cpu)[512] == 0x3
    cpu2 = vcpu(k, [(0xD, 0, 1, 0x7, 0, 0, 0)])
    k.ioctl(cpu2, X.KVM_SET_XSAVE, xsave(k, cpu2, [(512, 0x7)]))
    assert xsave(k, cpu2)[512] == 0x7


def test_set_xsave_mxcsr_rules(k):
    """copy_uabi_to_xstate: MXCSR is checked when FP, SSE or YMM is in XSTATE_BV; SSE
    without FP takes MXCSR and MXCSR_MASK from the buffer; FP takes the whole legacy area."""
    cpu = vcpu(k)
    assert err(k.ioctl, cpu, X.KVM_SET_XSAVE, xsave(k, cpu, [(512, 1), (24, 1 << 20)])) \
        == errno.EINVAL
    k.ioctl(cpu, X.KVM_SET_XSAVE, xsave(k, cpu, [(512, 2), (24, 0x1F00), (28, 0x1234)]))
    got = xsave(k, cpu)
    assert got[24:32] == (0x1F00).to_bytes(4, "little") + (0x1234).to_bytes(4, "little")


def test_cpuid_address_width_check_takes_the_first_0x80000008_entry(k):
    """kvm_check_cpuid looks 0x80000008 up with kvm_find_cpuid_entry: the first entry of
    the function whatever its index, so a virtual-address width of 1 is EINVAL there too."""
    cpu = vcpu(k)
    bad = cpuid_table([(0x80000008, 1, 1, 0x100, 0, 0, 0)])
    assert err(k.ioctl, cpu, X.KVM_SET_CPUID2, bad) == errno.EINVAL


# --- MSR_AMD64_TSC_RATIO ---------------------------------------------------------------------


def test_tsc_ratio_is_not_served_on_a_vmx_host():
    """vmx_get_msr / vmx_set_msr have no case for it and vmx_has_emulated_msr hides it:
    a host-initiated access stops the loop there, as for any unknown MSR."""
    with kernel() as k:
        cpu = vcpu(k)
        buf = msrs_buf([(0x174, 0), (0xC0000104, 5)])
        assert k.ioctl(cpu, X.KVM_GET_MSRS, buf) == 1
        assert msrs_values(buf, 2) == [0, 0]
        assert k.ioctl(cpu, X.KVM_SET_MSRS, msrs_buf([(0xC0000104, 0)])) == 0


@pytest.mark.parametrize("value,taken", [(0, True), (1 << 32, True), (1, False),
                                         (2 << 32, False), ((1 << 32) | 1, False)])
def test_tsc_ratio_where_served_reads_its_default_and_takes_only_0_or_it(value, taken):
    """svm_get/set_msr without TSC scaling for the guest (the PVM probe host the same):
    reads the default ratio; a host write of 0 or of that ratio is taken and dropped."""
    with kernel(tsc_ratio_msr=1 << 32) as k:
        cpu = vcpu(k)
        assert k.ioctl(cpu, X.KVM_SET_MSRS, msrs_buf([(0xC0000104, value)])) == int(taken)
        buf = msrs_buf([(0xC0000104, 7)])
        assert k.ioctl(cpu, X.KVM_GET_MSRS, buf) == 1
        assert msrs_values(buf, 1) == [1 << 32]
