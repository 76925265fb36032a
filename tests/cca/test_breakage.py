"""What breaks (reference §3.4, docs/arch/cca.md §6), through the consequences API."""

import errno

import pytest

import kmock
from kmock.uapi import kvm as K
from kmock_cca.rtt import RSI_CHANGE_DESTROYED, Hipas, Ripas

from iommufd._util import Iommufd, vfio_attach, vfio_bind, vfio_open
from .conftest import cca_kernel
from .realm_vmm import RAM, P, RealmVmm

RAM_ = int(Ripas.RAM)


@pytest.fixture
def vmm(k):
    v = RealmVmm(k).boot(size=16 * P)
    assert v.run_to_stop() == K.KVM_EXIT_INTR
    return v


def test_punch_of_unreleased_ram_destroys_it(vmm):
    g = vmm.guest()
    g.write(RAM + 3 * P, b"secret")
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    vmm.k.fallocate(vmm.gmem, 3, 3 * P, P)  # the host punches a page the realm uses
    (v,) = vmm.k.violations.of_kind("realm_data_destroyed")
    assert v.gpa == RAM + 3 * P and "PUNCH_HOLE" in v.explanation
    assert v["host_call"] == "fallocate(PUNCH_HOLE) on the guest_memfd, guest_memfd offset 0x3000"
    assert vmm.realm.entry(RAM + 3 * P).ripas == Ripas.DESTROYED
    # every later access aborts with no progress; KVM_RUN returns -EINTR / KVM_EXIT_INTR
    r = g.read(RAM + 3 * P, 6)
    g.stop()  # (were the read to progress, the realm would reach this stop, not halt)
    for _ in range(2):
        assert vmm.run() == -errno.EINTR
        assert vmm.kvm_run().exit_reason == K.KVM_EXIT_INTR
        assert not r.done
    (a, _) = vmm.k.violations.of_kind("realm_access_destroyed")
    assert a.gpa == RAM + 3 * P and "PUNCH_HOLE" in a.explanation
    # a populated page the guest never touched is destroyed too (not in KVM's stage-2)
    vmm.k.fallocate(vmm.gmem, 3, 0, P)
    assert vmm.realm.entry(RAM).ripas == Ripas.DESTROYED


def test_change_destroyed_recovers(vmm):
    g = vmm.guest()
    vmm.k.fallocate(vmm.gmem, 3, 0, P)  # a populated page
    s0 = g.cca.ipa_state_set(RAM, RAM + P, RAM_)  # without RSI_CHANGE_DESTROYED: no progress
    assert vmm.run() == -errno.EFAULT and vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s0.result == (0, RAM, 0)
    s = g.cca.ipa_state_set(RAM, RAM + P, RAM_, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT and vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s.result == (0, RAM + P, 0)
    r = g.read(RAM, 4)
    # a fresh page: the old contents are gone
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and r.result == bytes(4)
    e = vmm.realm.entry(RAM)
    assert (e.hipas, e.ripas) == (Hipas.ASSIGNED, Ripas.RAM)


def test_memslot_delete_destroys_realm_ram(vmm):
    k = vmm.k
    k.ioctl(vmm.vm, K.KVM_SET_USER_MEMORY_REGION2,
            K.kvm_userspace_memory_region2(slot=0, guest_phys_addr=RAM, memory_size=0))
    (v,) = k.violations.of_kind("realm_data_destroyed")
    assert "memslot" in v.explanation and vmm.realm.entry(RAM).ripas == Ripas.DESTROYED


def test_realm_access_to_empty_is_an_sea(vmm):
    g = vmm.guest()
    g.cca.ipa_state_set(RAM + 2 * P, RAM + 3 * P, 0, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    vmm.convert(RAM + 2 * P, P, private=False)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    before = len(vmm.k.violations)
    r = g.read(RAM + 2 * P, 8)
    h = g.hlt()
    # the host sees nothing: the script went on to the WFI, which waits inside KVM_RUN
    # until the VMM's thread is signalled
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and h.done and h.exits == []
    assert r.done and r.result is None and "synchronous external abort" in r.aborted
    (v,) = vmm.k.violations[before:]
    assert v.kind == "realm_sea" and v.gpa == RAM + 2 * P and v.vcpu == 0


def test_host_access_to_realm_pas_is_a_gpf():
    k = cca_kernel()
    vmm = RealmVmm(k)
    vmm.create_vgic()
    gm = k.ioctl(vmm.vm, K.KVM_CREATE_GUEST_MEMFD,
                 K.kvm_create_guest_memfd(size=4 * P, flags=K.GUEST_MEMFD_FLAG_MMAP))
    k.ioctl(vmm.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=RAM, memory_size=4 * P,
        guest_memfd=gm))
    vmm.gpa, vmm.gmem = RAM, gm
    vmm.set_attributes(RAM, 4 * P, K.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    vmm.populate(RAM, b"measured".ljust(P, b"\0"))
    m = k.mmap(gm, 4 * P, 3, 1)
    with pytest.raises(kmock.SigBus) as ei:
        m[0]
    assert "granule protection fault" in str(ei.value) or \
        "granule protection fault" in k.violations[-1].explanation
    v = k.violations.of_kind("host_access_fault")[-1]
    assert "DATA" in v.explanation and "Realm PAS" in v.explanation
    m.close()
    k.close_all()


def test_dma_into_realm_pas_is_blocked():
    k = cca_kernel(iommufd_gmem_policy="notifier")
    vmm = RealmVmm(k).boot(size=8 * P)
    ictx = Iommufd(k)
    dev = k.add_vfio_device()
    vfd = vfio_open(k, dev)
    vfio_bind(k, vfd, ictx.fd)
    ioas = ictx.ioas_alloc()
    vfio_attach(k, vfd, ioas)
    iova = 1 << 30
    ictx.map_file(ioas, vmm.gmem, 0, 8 * P, iova=iova)
    with pytest.raises(kmock.DmaFault):
        dev.dma_write(iova, b"device")  # page 0 was populated: a DATA granule
    (v,) = k.violations.of_kind("dma_blocked")
    assert "SMMU granule protection" in v.explanation and v.iova == iova
    assert k.file(vmm.gmem).inode.read(0, 6) == b"realm "  # nothing was written
    assert vmm.vm_obj.vmtype.iommu_conversion_policy == "split"
    k.close_all()
