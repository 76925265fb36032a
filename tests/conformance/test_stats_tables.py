"""The upstream 6.18 x86 stats tables of kmock.kvm.stats (taken from arch/x86/kvm/x86.c)
against this machine's real kernel: every upstream descriptor is there, in the same order
and with the same flags, exponent, size and offset; what the real kernel has beyond them
are vendor additions (the host profile probes them, profile settings stats_*_desc)."""

import fcntl
import os

import pytest

import kmock
from kmock.kvm import stats
from kmock.testing.conformance import kvm_available
from kmock.uapi import kvm as K

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(not kvm_available(), reason="no /dev/kvm on this machine"),
]


def _real_tables():
    kvm = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    fds = [kvm]
    try:
        vm = fcntl.ioctl(kvm, K.KVM_CREATE_VM, 0)
        fds.append(vm)
        vcpu = fcntl.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        fds.append(vcpu)
        out = []
        for fd in (vm, vcpu):
            s = fcntl.ioctl(fd, K.KVM_GET_STATS_FD, 0)
            fds.append(s)
            out.append(stats.parse(os.pread(s, 1 << 16, 0))[2])
        return out
    finally:
        for fd in reversed(fds):
            os.close(fd)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x86 table")
def test_upstream_tables_are_the_real_kernels_minus_vendor_additions():
    real_vm, real_vcpu = _real_tables()
    prof = kmock.profiles.get("linux-6.18")
    for kind, real in (("vm", real_vm), ("vcpu", real_vcpu)):
        upstream = stats.descriptors(prof, kind)
        names = {d.name for d in upstream}
        assert [d for d in real if d.name in names] == list(upstream), kind
        extra = [d.name for d in real if d.name not in names]
        # vendor additions come after the upstream ones, in the stat struct too
        assert real[:len(upstream)] == list(upstream), (kind, extra)


def test_host_profile_tables_are_the_real_kernels():
    real_vm, real_vcpu = _real_tables()
    host = kmock.profiles.host_profile()
    assert stats.descriptors(host, "vm") == tuple(real_vm)
    assert stats.descriptors(host, "vcpu") == tuple(real_vcpu)
