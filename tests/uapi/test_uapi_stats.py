"""kmock.uapi.kvm binary stats against include/uapi/linux/kvm.h (Linux 6.18):
struct kvm_stats_header, struct kvm_stats_desc, the KVM_STATS_* flags and
KVM_GET_STATS_FD = _IO(KVMIO, 0xce). Every expected value is a literal from the header."""

import ctypes

import pytest

from kmock.uapi import kvm

from ._layout import field, field_names, ioc


def test_get_stats_fd_number():
    assert kvm.KVM_GET_STATS_FD == ioc(0, 0xAE, 0xCE, 0) == 0xAECE


def test_stats_header_layout():
    assert ctypes.sizeof(kvm.kvm_stats_header) == 24
    assert field_names(kvm.kvm_stats_header) == (
        "flags", "name_size", "num_desc", "id_offset", "desc_offset", "data_offset")
    for i, name in enumerate(field_names(kvm.kvm_stats_header)):
        assert field(kvm.kvm_stats_header, name) == (4 * i, 4)


@pytest.mark.parametrize("name,off,size", [
    ("flags", 0, 4), ("exponent", 4, 2), ("size", 6, 2), ("offset", 8, 4), ("bucket_size", 12, 4)])
def test_stats_desc_layout(name, off, size):
    # the flexible array ``char name[]`` starts at 16, the struct's size
    assert ctypes.sizeof(kvm.kvm_stats_desc) == 16
    assert field(kvm.kvm_stats_desc, name) == (off, size)


def test_exponent_is_signed():
    d = kvm.kvm_stats_desc(exponent=-9)
    assert d.exponent == -9 and bytes(d)[4:6] == (-9).to_bytes(2, "little", signed=True)


FLAGS = [
    ("KVM_STATS_TYPE_SHIFT", 0), ("KVM_STATS_TYPE_MASK", 0xF), ("KVM_STATS_TYPE_CUMULATIVE", 0),
    ("KVM_STATS_TYPE_INSTANT", 1), ("KVM_STATS_TYPE_PEAK", 2), ("KVM_STATS_TYPE_LINEAR_HIST", 3),
    ("KVM_STATS_TYPE_LOG_HIST", 4), ("KVM_STATS_TYPE_MAX", 4),
    ("KVM_STATS_UNIT_SHIFT", 4), ("KVM_STATS_UNIT_MASK", 0xF0), ("KVM_STATS_UNIT_NONE", 0),
    ("KVM_STATS_UNIT_BYTES", 0x10), ("KVM_STATS_UNIT_SECONDS", 0x20),
    ("KVM_STATS_UNIT_CYCLES", 0x30), ("KVM_STATS_UNIT_BOOLEAN", 0x40), ("KVM_STATS_UNIT_MAX", 0x40),
    ("KVM_STATS_BASE_SHIFT", 8), ("KVM_STATS_BASE_MASK", 0xF00), ("KVM_STATS_BASE_POW10", 0),
    ("KVM_STATS_BASE_POW2", 0x100), ("KVM_STATS_BASE_MAX", 0x100),
]


@pytest.mark.parametrize("name,value", FLAGS, ids=[f[0] for f in FLAGS])
def test_stats_flags(name, value):
    assert getattr(kvm, name) == value
