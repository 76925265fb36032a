"""KVM_ARM_RMI_POPULATE: every errno, in the series' order, and the in/out protocol
(v14 26/44, v12 20/46; docs/arch/cca.md §3 step 6)."""

import errno
import mmap

import pytest

from kmock.testing.errnos import err
from kmock.uapi import cca as C
from kmock.uapi import kvm as K
from kmock_cca.rtt import Hipas, RealmState, Ripas

from .conftest import cca_kernel
from .realm_vmm import RAM, P, RealmVmm, addr_of

M = C.KVM_ARM_RMI_POPULATE_FLAGS_MEASURE


@pytest.fixture
def vmm(k):
    v = RealmVmm(k)
    v.create_vgic()
    v.add_ram(16 * P)
    v.create_vcpu(0)
    v.finish_vgic()
    v.src = mmap.mmap(-1, 16 * P)
    v.src[:8] = b"contents"
    return v


def pop(vmm, base=RAM, size=P, src=None, flags=M, reserved=0):
    src = addr_of(vmm.src) if src is None else src
    return C.kvm_arm_rmi_populate(base=base, size=size, source_uaddr=src, flags=flags,
                                  reserved=reserved)


def call(vmm, args):
    return err(vmm.k.ioctl, vmm.vm, C.KVM_ARM_RMI_POPULATE, args)


@pytest.mark.parametrize("rev,expected", [("v12", errno.EPERM), ("v14", errno.ENXIO)])
def test_non_realm_vm(rev, expected):
    k = cca_kernel(cca_revision=rev)
    import os

    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 40)
    number = C.revision(rev)["KVM_ARM_RMI_POPULATE"]
    assert err(k.ioctl, vm, number, C.kvm_arm_rmi_populate(base=RAM, size=P)) == expected
    k.close_all()


def test_non_realm_errno_is_a_setting():
    k = cca_kernel(cca_populate_non_realm_errno=errno.EOPNOTSUPP)
    import os

    vm = k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, 0)
    assert err(k.ioctl, vm, C.KVM_ARM_RMI_POPULATE, C.kvm_arm_rmi_populate()) == errno.EOPNOTSUPP
    k.close_all()


def test_argument_checks(vmm):
    assert err(vmm.k.ioctl, vmm.vm, C.KVM_ARM_RMI_POPULATE, 8) == errno.EFAULT  # copy_from_user
    assert call(vmm, pop(vmm, reserved=1)) == errno.EINVAL
    assert call(vmm, pop(vmm, flags=2)) == errno.EINVAL
    assert call(vmm, pop(vmm, base=RAM + 1)) == errno.EINVAL
    assert call(vmm, pop(vmm, size=P + 8)) == errno.EINVAL
    assert call(vmm, pop(vmm, src=addr_of(vmm.src) + 8)) == errno.EINVAL  # v13+: aligned source
    # nothing happened: the RD is not even created by a refused call
    assert vmm.vm_obj.arch.state == RealmState.NONE


def test_v12_accepts_an_unaligned_source_and_returns_bytes():
    k = cca_kernel(cca_revision="v12")
    v = RealmVmm(k, realm_type=1 << 8)
    v.create_vgic()
    v.add_ram(8 * P)
    v.src = mmap.mmap(-1, 8 * P)
    v.src[8:16] = b"unaligne"
    args = pop(v, size=2 * P, src=addr_of(v.src) + 8)
    number = C.revision("v12")["KVM_ARM_RMI_POPULATE"]
    assert k.ioctl(v.vm, number, args) == 2 * P  # the bytes done; the struct is untouched
    assert (args.base, args.size) == (RAM, 2 * P)
    assert v.realm.entry(RAM + P).hipas == Hipas.ASSIGNED
    k.close_all()


def test_state_errnos(vmm, k):
    assert k.ioctl(vmm.vm, C.KVM_ARM_RMI_POPULATE, pop(vmm)) == 0  # NONE -> NEW
    assert vmm.vm_obj.arch.state == RealmState.NEW
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert call(vmm, pop(vmm, base=RAM + P)) == errno.EBUSY  # ACTIVE
    vmm.vm_obj.arch.state = RealmState.DYING
    assert call(vmm, pop(vmm, base=RAM + P)) == errno.EBUSY
    vmm.vm_obj.arch.state = RealmState.DEAD
    assert call(vmm, pop(vmm, base=RAM + P)) == errno.ENXIO


def test_gmem_populate_errnos(vmm, k):
    assert call(vmm, pop(vmm, base=RAM + 64 * P)) == errno.EINVAL  # no memslot
    vmm.set_attributes(RAM + 4 * P, P, 0)
    assert call(vmm, pop(vmm, base=RAM + 4 * P)) == errno.EINVAL  # not PRIVATE
    assert call(vmm, pop(vmm, src=0)) == errno.EOPNOTSUPP  # NULL source page
    assert k.ioctl(vmm.vm, C.KVM_ARM_RMI_POPULATE, pop(vmm)) == 0
    assert call(vmm, pop(vmm)) == errno.EEXIST  # already populated
    bad = pop(vmm, base=RAM + P, src=0x1000)
    assert call(vmm, bad) == errno.EFAULT  # the source cannot be read
    assert (bad.base, bad.size) == (RAM + P, P)  # copied back unchanged


def test_inout_loop_and_partial_progress(vmm, k):
    # the range runs into a page left shared: the first call stops there, the next fails
    vmm.set_attributes(RAM + 3 * P, P, 0)
    args = pop(vmm, size=6 * P)
    assert k.ioctl(vmm.vm, C.KVM_ARM_RMI_POPULATE, args) == 0
    assert (args.base, args.size, args.source_uaddr) == (RAM + 3 * P, 3 * P, addr_of(vmm.src) + 3 * P)
    assert call(vmm, args) == errno.EINVAL
    vmm.set_attributes(RAM + 3 * P, P, K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    while args.size:
        k.ioctl(vmm.vm, C.KVM_ARM_RMI_POPULATE, args)
    assert args.base == RAM + 6 * P
    realm = vmm.realm
    assert [(s, e, rp) for s, e, rp, _ in realm.assigned_runs(RAM, RAM + 16 * P)] == \
        [(RAM, RAM + 6 * P, Ripas.RAM)]
    assert vmm.k.file(vmm.gmem).inode.read(0, 8) == b"contents"


def test_measure_flag(vmm, k):
    k.ioctl(vmm.vm, C.KVM_ARM_RMI_POPULATE, pop(vmm, flags=M))
    k.ioctl(vmm.vm, C.KVM_ARM_RMI_POPULATE, pop(vmm, base=RAM + P, flags=0))
    assert vmm.realm.rim == [("DATA_CREATE", RAM, RAM + P, True),
                             ("DATA_CREATE", RAM + P, RAM + 2 * P, False)]


def test_populated_pages_are_realm_pas(vmm, k):
    k.ioctl(vmm.vm, C.KVM_ARM_RMI_POPULATE, pop(vmm, size=2 * P))
    inode = vmm.k.file(vmm.gmem).inode
    g = vmm.vm_obj.vmtype.granules
    assert g.state(inode.pfn(0) << 12).name == "DATA"
    assert g.state(inode.pfn(2) << 12).name == "UNDELEGATED"
