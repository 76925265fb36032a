"""x86 machine check (kmock.kvm.x86_mce): KVM_X86_GET_MCE_CAP_SUPPORTED, KVM_X86_SETUP_MCE,
KVM_X86_SET_MCE and the MCE MSRs of host-initiated KVM_GET/SET_MSRS (x86.c; conformance
x86_mce_setup, x86_mce_msrs, x86_mce_set_mce)."""

import ctypes
import dataclasses
import errno
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kmock
from kmock.kvm import x86_mce as M
from kmock.kvm.x86_state import DEFAULTS_618
from kmock.profiles import LINUX_6_18
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from .test_x86_vcpu_state import err
from ._util import read_msrs, write_msrs

U64 = (1 << 64) - 1
MCG_CAP, MCG_STATUS, MCG_CTL, MCG_EXT_CTL = 0x179, 0x17A, 0x17B, 0x4D0
MC0 = 0x400
QEMU_CAP = 0x100 | 0x1000000 | 10


@pytest.fixture
def dev(k):
    return k.open("/dev/kvm", 2)


@pytest.fixture
def vcpu(k, dev):
    vm = k.ioctl(dev, K.KVM_CREATE_VM, 0)
    return k.ioctl(vm, K.KVM_CREATE_VCPU, 0)


def _profile(**x86_vcpu):
    """linux-6.18 with probed-style x86_vcpu settings (a host like the PVM probe host)."""
    return dataclasses.replace(LINUX_6_18, name="probed-like",
                               x86_vcpu=MappingProxyType({**DEFAULTS_618, **x86_vcpu}))


read, write = read_msrs, write_msrs


def setup(k, v, cap):
    return k.ioctl(v, X.KVM_X86_SETUP_MCE, ctypes.c_uint64(cap))


def test_cap_supported_is_the_vmx_value_on_linux_618(k, dev):
    v = ctypes.c_uint64(7)
    assert k.ioctl(dev, X.KVM_X86_GET_MCE_CAP_SUPPORTED, v) == 0
    assert v.value == M.MCG_CTL_P | M.MCG_SER_P | M.MCG_LMCE_P | M.MCG_CMCI_P
    assert k.ioctl(dev, K.KVM_CHECK_EXTENSION, X.KVM_CAP_MCE) == 32
    assert err(k.ioctl, dev, X.KVM_X86_GET_MCE_CAP_SUPPORTED, 8) == errno.EFAULT


def test_cap_supported_only_on_dev_kvm(k, dev, vcpu):
    vm = k.ioctl(dev, K.KVM_CREATE_VM, 0)
    assert err(k.ioctl, vm, X.KVM_X86_GET_MCE_CAP_SUPPORTED, ctypes.c_uint64()) == errno.ENOTTY
    assert err(k.ioctl, vcpu, X.KVM_X86_GET_MCE_CAP_SUPPORTED, ctypes.c_uint64()) == errno.EINVAL
    assert err(k.ioctl, dev, X.KVM_X86_SETUP_MCE, ctypes.c_uint64(1)) == errno.EINVAL


def test_a_probed_profile_answers_its_own_value():
    prof = _profile(mce_cap_supported=0x1000100)
    with kmock.Kernel(prof) as k:
        dev = k.open("/dev/kvm", 2)
        v = ctypes.c_uint64()
        k.ioctl(dev, X.KVM_X86_GET_MCE_CAP_SUPPORTED, v)
        assert v.value == 0x1000100
        vcpu = k.ioctl(k.ioctl(dev, K.KVM_CREATE_VM, 0), K.KVM_CREATE_VCPU, 0)
        assert err(setup, k, vcpu, M.MCG_CMCI_P | 4) == errno.EINVAL  # not on that host
        assert setup(k, vcpu, M.MCG_SER_P | 4) == 0


def test_new_vcpu_has_32_banks_and_no_capability(k, vcpu):
    assert read(k, vcpu, 0, 1, MCG_CAP, MCG_STATUS, MCG_CTL, MCG_EXT_CTL) == (
        6, [0, 0, 32, 0, 0, 0])
    n, vals = read(k, vcpu, *range(MC0, MC0 + 128), MC0 + 128)
    assert (n, set(vals)) == (128, {0})
    n, vals = read(k, vcpu, *range(0x280, 0x2A1))
    assert (n, set(vals)) == (32, {0})


@pytest.mark.parametrize("cap", [0, 33, 0xFF, 0x100, 0x200 | 4, 1 << 63 | 4, 1 << 28 | 1])
def test_setup_refusals_change_nothing(k, vcpu, cap):
    write(k, vcpu, (MC0 + 5, 0x77))
    before = read(k, vcpu, MCG_CAP, MCG_CTL, MC0, MC0 + 5)
    assert err(setup, k, vcpu, cap) == errno.EINVAL
    assert read(k, vcpu, MCG_CAP, MCG_CTL, MC0, MC0 + 5) == before


def test_setup_efault(k, vcpu):
    assert err(k.ioctl, vcpu, X.KVM_X86_SETUP_MCE, 8) == errno.EFAULT
    assert read(k, vcpu, MCG_CAP) == (1, [32])


def test_setup_sets_cap_ctl_and_bank_ctls_only(k, vcpu):
    write(k, vcpu, (MC0 + 1, 0x11), (MC0 + 2, 0x22), (MC0 + 3, 0x33))
    assert setup(k, vcpu, QEMU_CAP | 0xFF0000) == 0
    assert read(k, vcpu, MCG_CAP, MCG_CTL) == (2, [QEMU_CAP | 0xFF0000, U64])
    assert read(k, vcpu, MC0, MC0 + 1, MC0 + 2, MC0 + 3) == (4, [U64, 0x11, 0x22, 0x33])
    n, vals = read(k, vcpu, *range(MC0, MC0 + 41))
    assert n == 40 and vals[::4] == [U64] * 10
    assert read(k, vcpu, 0x280 + 10) == (0, [])  # CTL2 beyond the bank count
    # fewer banks, no CTL_P: MCG_CTL keeps its value
    assert setup(k, vcpu, 2) == 0
    assert read(k, vcpu, MCG_CTL, MC0 + 8) == (1, [U64])


def test_setup_with_cmci_clears_ctl2(k, vcpu):
    assert setup(k, vcpu, M.MCG_CMCI_P | 2) == 0
    assert write(k, vcpu, (0x280, 1 << 30 | 5)) == 1
    assert read(k, vcpu, 0x280) == (1, [1 << 30 | 5])
    assert setup(k, vcpu, M.MCG_CMCI_P | 2) == 0
    assert read(k, vcpu, 0x280) == (1, [0])


@pytest.mark.parametrize("idx,data,ok", [
    (MCG_STATUS, 0x12345, True),
    (MCG_CTL, 0, True), (MCG_CTL, U64, True), (MCG_CTL, 1, False),
    (MCG_CAP, 0, False), (MCG_CAP, QEMU_CAP, False), (0, 0, False), (1, 0, False),
    (MCG_EXT_CTL, 0, True), (MCG_EXT_CTL, 1, True), (MCG_EXT_CTL, 2, False),
    (MC0, 0, True), (MC0, U64, True), (MC0, U64 & ~0x401, True), (MC0, U64 & ~2, False),
    (MC0, 1, False), (MC0 + 1, 5, True), (MC0 + 2, U64, True), (MC0 + 3, 9, True),
    (MC0 + 39, 9, True), (MC0 + 40, 0, False),
    (0x280, 0, True), (0x280, 1, False), (0x289, 0, True), (0x28A, 0, False),
])
def test_msr_writes_after_qemu_setup(k, vcpu, idx, data, ok):
    setup(k, vcpu, QEMU_CAP)
    before = read(k, vcpu, idx)
    assert write(k, vcpu, (idx, data)) == int(ok)
    after = read(k, vcpu, idx)
    if ok:
        assert after == (1, [data])
    else:
        assert after == before


def test_mcg_ctl_without_ctl_p(k, vcpu):
    setup(k, vcpu, M.MCG_SER_P | 3)
    assert write(k, vcpu, (MCG_CTL, 0)) == 1
    assert write(k, vcpu, (MCG_CTL, U64)) == 0
    assert read(k, vcpu, MCG_CTL) == (1, [0])


def test_ext_ctl_absent_on_a_vendor_without_it():
    prof = _profile(mcg_ext_ctl=False)
    with kmock.Kernel(prof) as k:
        dev = k.open("/dev/kvm", 2)
        vcpu = k.ioctl(k.ioctl(dev, K.KVM_CREATE_VM, 0), K.KVM_CREATE_VCPU, 0)
        assert read(k, vcpu, MCG_EXT_CTL) == (0, [])
        assert write(k, vcpu, (MCG_EXT_CTL, 0)) == 0


def test_a_refused_entry_stops_the_loop(k, vcpu):
    setup(k, vcpu, QEMU_CAP)
    assert write(k, vcpu, (MC0 + 1, 7), (MC0, 1), (MC0 + 2, 9)) == 1
    assert read(k, vcpu, MC0, MC0 + 1, MC0 + 2) == (3, [U64, 7, 0])


def test_qemu_mce_block(k, vcpu):
    setup(k, vcpu, QEMU_CAP)
    block = [(MCG_STATUS, 0), (MCG_CTL, U64)]
    for b in range(10):
        block += [(MC0 + 4 * b, U64), (MC0 + 4 * b + 1, 0), (MC0 + 4 * b + 2, 0),
                  (MC0 + 4 * b + 3, 0)]
    assert write(k, vcpu, *block) == 42


# --- KVM_X86_SET_MCE ---------------------------------------------------------------------

VAL, OVER, UC, S, AR, PCC = 1 << 63, 1 << 62, 1 << 61, 1 << 56, 1 << 55, 1 << 57


def set_mce(k, v, bank, status, addr=0x1000, misc=0x86, mcg_status=0):
    return k.ioctl(v, X.KVM_X86_SET_MCE, X.kvm_x86_mce(
        status=status, addr=addr, misc=misc, mcg_status=mcg_status, bank=bank))


def events(k, v):
    ev = X.kvm_vcpu_events()
    k.ioctl(v, X.KVM_GET_VCPU_EVENTS, ev)
    return ev.exception.injected, ev.exception.pending, ev.exception.nr, ev.triple_fault.pending


def bank(k, v, b):
    return read(k, v, MCG_STATUS, *range(MC0 + 4 * b, MC0 + 4 * b + 4))[1]


@pytest.fixture
def mce_vcpu(k, dev):
    vm = k.ioctl(dev, K.KVM_CREATE_VM, 0)
    e = K.kvm_enable_cap(cap=K.KVM_CAP_X86_TRIPLE_FAULT_EVENT)
    e.args[0] = 1
    k.ioctl(vm, K.KVM_ENABLE_CAP, e)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    setup(k, v, QEMU_CAP)
    return v


@pytest.mark.parametrize("b,status", [(10, VAL), (255, VAL), (0, 5), (0, UC)])
def test_set_mce_einval_changes_nothing(k, mce_vcpu, b, status):
    before = [bank(k, mce_vcpu, i) for i in range(10)]
    assert err(set_mce, k, mce_vcpu, b, status) == errno.EINVAL
    assert [bank(k, mce_vcpu, i) for i in range(10)] == before
    assert err(k.ioctl, mce_vcpu, X.KVM_X86_SET_MCE, 8) == errno.EFAULT


def test_corrected_errors_and_over(k, mce_vcpu):
    set_mce(k, mce_vcpu, 1, VAL | 0x11)
    assert bank(k, mce_vcpu, 1) == [0, U64, VAL | 0x11, 0x1000, 0x86]
    set_mce(k, mce_vcpu, 1, VAL | 0x12, addr=0x2000)
    assert bank(k, mce_vcpu, 1) == [0, U64, VAL | OVER | 0x12, 0x2000, 0x86]
    assert events(k, mce_vcpu) == (0, 0, 0, 0)


def test_ucna_then_corrected_only_sets_over(k, mce_vcpu):
    set_mce(k, mce_vcpu, 2, VAL | UC | 0x13)
    assert bank(k, mce_vcpu, 2) == [0, U64, VAL | UC | 0x13, 0x1000, 0x86]
    set_mce(k, mce_vcpu, 2, VAL | 0x14, addr=0x3000)
    assert bank(k, mce_vcpu, 2) == [0, U64, VAL | OVER | UC | 0x13, 0x1000, 0x86]
    assert events(k, mce_vcpu) == (0, 0, 0, 0)


def test_uncorrected_without_cr4_mce_is_a_triple_fault(k, mce_vcpu):
    set_mce(k, mce_vcpu, 3, VAL | UC | S, mcg_status=5)
    assert bank(k, mce_vcpu, 3) == [0, U64, 0, 0, 0]
    assert events(k, mce_vcpu) == (0, 0, 0, 1)


def _cr4_mce(k, v):
    s = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, s)
    s.cr4 |= 1 << 6
    k.ioctl(v, X.KVM_SET_SREGS, s)


def test_uncorrected_queues_mc(k, mce_vcpu):
    _cr4_mce(k, mce_vcpu)
    set_mce(k, mce_vcpu, 5, VAL | UC | PCC | S, addr=0x5000, mcg_status=5)
    assert bank(k, mce_vcpu, 5) == [5, U64, VAL | UC | PCC | S, 0x5000, 0x86]
    assert events(k, mce_vcpu) == (1, 1, 18, 0)
    # MCG_STATUS.MCIP set: the next one is a triple fault, not recorded
    set_mce(k, mce_vcpu, 6, VAL | UC | S, mcg_status=5)
    assert bank(k, mce_vcpu, 6) == [5, U64, 0, 0, 0]
    assert events(k, mce_vcpu) == (1, 1, 18, 1)


@pytest.mark.parametrize("prev,want", [(13, (1, 1, 18, 0)), (8, (1, 0, 8, 1))])
def test_mc_over_a_queued_exception(k, mce_vcpu, prev, want):
    """kvm_multiple_exception: #MC replaces a queued #GP; after #DF a triple fault."""
    _cr4_mce(k, mce_vcpu)
    ev = X.kvm_vcpu_events()
    ev.exception.injected, ev.exception.nr, ev.exception.has_error_code = 1, prev, 1
    k.ioctl(mce_vcpu, X.KVM_SET_VCPU_EVENTS, ev)
    set_mce(k, mce_vcpu, 0, VAL | UC | S)
    got = X.kvm_vcpu_events()
    k.ioctl(mce_vcpu, X.KVM_GET_VCPU_EVENTS, got)
    assert (got.exception.injected, got.exception.pending, got.exception.nr,
            got.exception.has_error_code) == want
    assert got.triple_fault.pending == (prev == 8)


@pytest.mark.parametrize("msr", [MCG_CTL, MC0 + 16])
def test_uncorrected_dropped_by_ctl(k, mce_vcpu, msr):
    _cr4_mce(k, mce_vcpu)
    write(k, mce_vcpu, (msr, 0))
    set_mce(k, mce_vcpu, 4, VAL | UC | S | AR, mcg_status=5)
    assert bank(k, mce_vcpu, 4)[2:] == [0, 0, 0]
    assert events(k, mce_vcpu) == (0, 0, 0, 0)


# --- a model of the MSR rules ---------------------------------------------------------------

VALUES = st.sampled_from([0, 1, 2, 5, 0x400, 1 << 30, 1 << 30 | 0x7FFF, U64, U64 & ~1,
                          U64 & ~0x400, U64 & ~0x401, U64 & ~2, 1 << 63])
INDEXES = st.sampled_from([MCG_STATUS, MCG_CTL, MCG_CAP, *range(MC0, MC0 + 12),
                           MC0 + 127, 0x280, 0x282, 0x29F])
CAPS = st.sampled_from([None, QEMU_CAP, 3, M.MCG_CMCI_P | 3, M.MCG_CTL_P | 32])


def _model_ok(cap, idx, data):
    n = cap & 0xFF
    if idx == MCG_STATUS:
        return True
    if idx == MCG_CTL:
        return (data == 0 or bool(cap & M.MCG_CTL_P)) and data in (0, U64)
    if idx == MCG_CAP:
        return False
    if idx < MC0:
        return (idx - 0x280 < n and (data == 0 or bool(cap & M.MCG_CMCI_P))
                and not data & ~(1 << 30 | 0x7FFF))
    i = idx - MC0
    return i < 4 * n and (i % 4 != 0 or data == 0 or (data | 0x401) == U64)


@settings(max_examples=60, deadline=None)
@given(cap=CAPS, writes=st.lists(st.tuples(INDEXES, VALUES), max_size=12))
def test_msr_writes_follow_the_model(cap, writes):
    with kmock.Kernel(profile="linux-6.18") as k:
        dev = k.open("/dev/kvm", 2)
        v = k.ioctl(k.ioctl(dev, K.KVM_CREATE_VM, 0), K.KVM_CREATE_VCPU, 0)
        model = {MCG_CAP: 32, MCG_CTL: 0, MCG_STATUS: 0}
        c = 32
        if cap is not None:
            setup(k, v, cap)
            c = model[MCG_CAP] = cap
            if cap & M.MCG_CTL_P:
                model[MCG_CTL] = U64
            for b in range(cap & 0xFF):
                model[MC0 + 4 * b] = U64
        for idx, data in writes:
            ok = _model_ok(c, idx, data)
            assert write(k, v, (idx, data)) == int(ok)
            if ok:
                model[idx] = data
        for idx in {i for i, _ in writes} | {MCG_CAP, MCG_CTL}:
            n, vals = read(k, v, idx)
            if idx in (MCG_CAP, MCG_CTL, MCG_STATUS) or (
                    idx >= MC0 and idx - MC0 < 4 * (c & 0xFF)) or (
                    idx < MC0 and idx - 0x280 < (c & 0xFF)):
                assert vals == [model.get(idx, 0)]
            else:
                assert n == 0
