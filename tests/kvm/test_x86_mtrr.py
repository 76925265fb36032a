"""The guest MTRR MSRs (kmock.kvm.x86_mtrr, arch/x86/kvm/mtrr.c of 6.18; conformance
x86_mtrr_msrs): host-initiated KVM_GET/SET_MSRS."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kmock
from kmock.kvm import x86_mtrr as T
from kmock.testing.conformance_vcpu import supported_cpuid
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X
from ._util import read_msrs, write_msrs

DEFTYPE, CAP = 0x2FF, 0xFE
FIXED = (0x250, 0x258, 0x259, *range(0x268, 0x270))
VAR = tuple(range(0x200, 0x210))


@pytest.fixture
def vcpu(k):
    dev = k.open("/dev/kvm", 2)
    return k.ioctl(k.ioctl(dev, K.KVM_CREATE_VM, 0), K.KVM_CREATE_VCPU, 0)


read, write = read_msrs, write_msrs


def test_new_vcpu(k, vcpu):
    n, vals = read(k, vcpu, CAP, DEFTYPE, *FIXED, *VAR)
    assert (n, vals[0], set(vals[1:])) == (29, 0x508, {0})


@pytest.mark.parametrize("idx", [0x1FF, 0x210, 0x24F, 0x251, 0x257, 0x25A, 0x267, 0x270, 0x2FE])
def test_indexes_without_storage_are_refused(k, vcpu, idx):
    assert read(k, vcpu, idx) == (0, [])
    assert write(k, vcpu, (idx, 0)) == 0


@pytest.mark.parametrize("data", [0, 0x508])
def test_mtrrcap_is_read_only(k, vcpu, data):
    assert write(k, vcpu, (CAP, data)) == 0
    assert read(k, vcpu, CAP) == (1, [0x508])


@pytest.mark.parametrize("idx,data,ok", [
    (DEFTYPE, 0xC06, True), (DEFTYPE, 0xCFF, False), (DEFTYPE, 0xC02, False),
    (DEFTYPE, 0x1006, False), (DEFTYPE, 0x106, False), (DEFTYPE, 0x405, True),
    (0x250, 0x0001040506000104, True), (0x26F, 0x0606060606060602, False),
    (0x259, 0x0706060606060606, False),
    (0x200, 0x80000006, True), (0x200, 1 << 35 | 6, True), (0x200, 1 << 36 | 6, False),
    (0x200, 0x106, False), (0x200, 0x807, False), (0x20E, 3, False),
    (0x201, 0xFFFFF800, True), (0x201, 0xF_FFFF_F800, True), (0x201, 1 << 36 | 0x800, False),
    (0x201, 0x400, False), (0x20F, 1, False),
])
def test_checks_without_cpuid(k, vcpu, idx, data, ok):
    """No CPUID: MAXPHYADDR 36 (cpuid_query_maxphyaddr); a refusal keeps the value."""
    write(k, vcpu, (idx, 0))
    assert write(k, vcpu, (idx, data)) == int(ok)
    assert read(k, vcpu, idx) == (1, [data if ok else 0])


def test_maxphyaddr_follows_the_vcpu_cpuid(k, vcpu):
    dev = k.open("/dev/kvm", 2)
    table, _ = supported_cpuid(k, dev)
    k.ioctl(vcpu, X.KVM_SET_CPUID2, table)
    bits = 52  # the linux-6.18 profile's CPUID 0x80000008
    assert write(k, vcpu, (0x202, 1 << (bits - 1) | 6)) == 1
    assert write(k, vcpu, (0x202, 1 << bits | 6)) == 0
    assert read(k, vcpu, 0x202) == (1, [1 << (bits - 1) | 6])


def test_a_refused_entry_stops_the_loop(k, vcpu):
    assert write(k, vcpu, (DEFTYPE, 0xC06), (0x200, 2), (0x250, 0x0606060606060606)) == 1
    assert read(k, vcpu, DEFTYPE, 0x200, 0x250) == (3, [0xC06, 0, 0])


def test_qemu_block(k, vcpu):
    block = [(DEFTYPE, 0)] + [(i, 0) for i in FIXED] + [(i, 0) for i in VAR]
    assert write(k, vcpu, *block) == 28


TYPES = st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 0xFF])


@settings(max_examples=80, deadline=None)
@given(idx=st.sampled_from(sorted(T.STORED)), types=st.lists(TYPES, min_size=8, max_size=8),
       high=st.integers(0, 63), low_bits=st.integers(0, 0xFFF))
def test_against_a_model(idx, types, high, low_bits):
    """mtrr.c's rules written from the SDM view: memory types UC WC WT WP WB; reserved
    bits; MAXPHYADDR 36 without CPUID."""
    good = {0, 1, 4, 5, 6}
    if idx == DEFTYPE:
        data = types[0] | (low_bits & 0xF00) | (1 << high if high > 11 else 0)
        ok = types[0] in good and not data & ~0xCFF
    elif idx in FIXED:
        data = sum(t << (8 * i) for i, t in enumerate(types))
        ok = all(t in good for t in types)
    elif idx % 2 == 0:
        data = types[0] | (low_bits & 0xF00) | 1 << high
        ok = data & 0xFF in good and not data & 0xF00 and data < 1 << 36
    else:
        data = low_bits | 1 << high
        ok = not data & 0x7FF and data < 1 << 36
    with kmock.Kernel(profile="linux-6.18") as k:
        dev = k.open("/dev/kvm", 2)
        v = k.ioctl(k.ioctl(dev, K.KVM_CREATE_VM, 0), K.KVM_CREATE_VCPU, 0)
        assert write(k, v, (idx, data)) == int(ok)
        assert read(k, v, idx) == (1, [data if ok else 0])
