"""VmType.stage2_map may refuse a mapping (a failed S-EPT AUG, an RTT map that fails): the
fault fails with the errno and stage-2 keeps nothing of it, as KVM installs no SPTE when
the architecture's set_private_spte fails. Nothing is half-changed."""

import errno

import pytest

from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K

from ._one_vm import GPA, P, one_vm

TYPE = 12


class RefusingVm(VmType):
    type = TYPE
    name = "KVM_X86_REFUSING_VM (test)"
    platforms = ("refusing",)
    has_private_mem = True

    def __init__(self):
        self.refuse = False
        self.maps, self.zaps = [], []

    def stage2_map(self, vm, gfn, pfn, npages, private):
        if self.refuse:
            raise OSError(errno.EIO, "the architecture refused the mapping")
        self.maps.append((gfn, npages, private))

    def stage2_zap(self, vm, runs):
        self.zaps.append(runs)


@pytest.fixture
def env():
    vt = RefusingVm()
    k, vm, vcpu, _ = one_vm(vt, "refusing")
    yield k, vt, k.vm(vm), vcpu
    k.close_all()


def test_a_refused_mapping_fails_the_fault_and_leaves_no_entry(env):
    k, vt, vm, fd = env
    g = vm.vcpus[0].guest
    g.write(GPA + P, b"x", private=True)
    vt.refuse = True
    with pytest.raises(OSError) as e:
        k.ioctl(fd, K.KVM_RUN, 0)
    assert e.value.errno == errno.EIO
    assert vm.stage2.mapped_pages() == 0
    assert vt.zaps == []  # the VM type is not told of a mapping it refused
    assert vm.stage2.audit(vm) == []
    vt.refuse = False
    assert k.ioctl(fd, K.KVM_RUN, 0) == 0  # the access is retried and maps
    assert vt.maps == [((GPA >> 12) + 1, 1, True)] and vm.stage2.mapped_pages() == 1
