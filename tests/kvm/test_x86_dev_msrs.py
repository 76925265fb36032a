"""KVM_GET_MSRS on /dev/kvm (x86.c kvm_arch_dev_ioctl -> msr_io with do_get_feature_msr)."""

import errno

import pytest

from kmock.kvm import x86_state
from kmock.testing.conformance_vcpu import msrs_buf, msrs_values
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from .test_x86_vcpu_state import err


@pytest.fixture
def kvm(k):
    return k.open("/dev/kvm", 2)


def test_feature_values(k, kvm):
    want = dict(x86_state.DEFAULTS_618["msr_feature_dev_values"])
    feats = x86_state.DEFAULTS_618["msr_feature_list"]
    buf = msrs_buf([(i, 0x55) for i in feats])
    assert k.ioctl(kvm, X.KVM_GET_MSRS, buf) == len(feats)
    assert msrs_values(buf, len(feats)) == [want[i] for i in feats]


@pytest.mark.parametrize("idx,done,values", [
    (0x10, 3, [0x400000000C08E0EB, 0, 0]),   # advertised (MSR index list): reads 0
    (0x1B, 1, [0x400000000C08E0EB, 0, 7]),   # not advertised: stops, its entry zeroed
    (0xFFFFFFFF, 1, [0x400000000C08E0EB, 0, 7]),
])
def test_the_loop_stops_at_the_first_unreadable(k, kvm, idx, done, values):
    buf = msrs_buf([(0x10A, 0), (idx, 5), (0x345, 7)])
    assert k.ioctl(kvm, X.KVM_GET_MSRS, buf) == done
    assert msrs_values(buf, 3) == values


def test_protocol_errors(k, kvm):
    assert k.ioctl(kvm, X.KVM_GET_MSRS, msrs_buf([])) == 0
    buf = bytearray(8 + 16 * 256)
    buf[0:4] = (256).to_bytes(4, "little")
    assert err(k.ioctl, kvm, X.KVM_GET_MSRS, buf) == errno.E2BIG
    assert err(k.ioctl, kvm, X.KVM_GET_MSRS, 8) == errno.EFAULT
    assert err(k.ioctl, kvm, X.KVM_SET_MSRS, msrs_buf([(0x10A, 0)])) == errno.EINVAL


def test_vcpu_read_refusal_zeroes_the_entry(k, kvm):
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    buf = msrs_buf([(0x174, 3), (0x1234, 5), (0x175, 7)])
    assert k.ioctl(v, X.KVM_GET_MSRS, buf) == 1
    assert msrs_values(buf, 3) == [0, 0, 7]
