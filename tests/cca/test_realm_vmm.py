"""The v12+ VMM order through ioctls only, the realm lifecycle, and the arm64 surface a
realm VMM meets (docs/arch/cca.md §3)."""

import errno
import os

import pytest

from kmock.testing.errnos import err
from kmock.uapi import arm64 as A
from kmock.uapi import cca as C
from kmock.uapi import kvm as K
from kmock_cca.rtt import GranuleState, Hipas, RealmState, Ripas

from .conftest import cca_kernel
from .realm_vmm import RAM, P, RealmVmm


def test_v14_vmm_order_activates_on_first_run(k):
    vmm = RealmVmm(k)
    assert vmm.vm_obj.arch.state == RealmState.NONE
    vmm.create_vgic()
    vmm.add_ram(16 * P)
    vmm.create_vcpu(0)
    vmm.finish_vgic()
    assert vmm.populate(RAM, b"kernel".ljust(2 * P, b"\0")) == 1
    assert vmm.vm_obj.arch.state == RealmState.NEW  # the RD exists, not yet active
    realm = vmm.realm
    e = realm.entry(RAM)
    assert (e.hipas, e.ripas) == (Hipas.ASSIGNED, Ripas.RAM)  # implicit RIPAS RAM
    assert realm.entry(RAM + 2 * P).ripas == Ripas.EMPTY  # not yet INIT_RIPAS
    r = vmm.guest().read(RAM, 6)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert vmm.vm_obj.arch.state == RealmState.ACTIVE
    assert r.result == b"kernel"
    # RTT_INIT_RIPAS over the guest_memfd memslot made the rest RAM, UNASSIGNED (lazy)
    e = realm.entry(RAM + 5 * P)
    assert (e.hipas, e.ripas) == (Hipas.UNASSIGNED, Ripas.RAM)
    assert realm.rmm_state.name == "ACTIVE"
    assert ("DATA_CREATE", RAM, RAM + 2 * P, True) in realm.rim


def test_rmi_capability_and_realm_caps(k):
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, C.KVM_CAP_ARM_RMI) == 1 == C.KVM_CAP_ARM_RMI - 248
    realm = k.ioctl(kvm, K.KVM_CREATE_VM, C.KVM_VM_TYPE_ARM_REALM)
    normal = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    assert k.ioctl(realm, K.KVM_CHECK_EXTENSION, C.KVM_CAP_ARM_RMI) == 1
    assert k.ioctl(normal, K.KVM_CHECK_EXTENSION, C.KVM_CAP_ARM_RMI) == 1  # any VM
    # outside kvm_realm_ext_allowed: 0 on a realm, 1 on a normal VM
    assert k.ioctl(realm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ONE_REG) == 0
    assert k.ioctl(normal, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ONE_REG) == 1
    assert k.ioctl(realm, K.KVM_CHECK_EXTENSION, A.KVM_CAP_ARM_PSCI_0_2) == 1
    assert k.ioctl(realm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == \
        K.KVM_MEMORY_ATTRIBUTE_PRIVATE
    assert k.ioctl(normal, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == 0
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) == 0  # an x86 capability


@pytest.mark.parametrize("rev,cap,vm_type", [("v12", 247, 1 << 8), ("v13", 248, 1 << 8),
                                             ("v14", 249, 1 << 30), ("v15", 251, 1 << 30)])
def test_numbers_per_revision(rev, cap, vm_type):
    k = cca_kernel(cca_revision=rev)
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, cap) == 1
    for other in {247, 248, 249, 251} - {cap}:
        assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, other) == 0
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, vm_type | 40)
    assert k.vm(vm).vmtype.name == "KVM_VM_TYPE_ARM_REALM"
    k.close_all()


def test_create_vm_checks():
    k = cca_kernel(cca_rmm_ipa_limit=44)
    kvm = k.open("/dev/kvm", os.O_RDWR)
    REALM = C.KVM_VM_TYPE_ARM_REALM
    assert err(k.ioctl, kvm, K.KVM_CREATE_VM, REALM | A.KVM_VM_TYPE_ARM_PROTECTED) == errno.EINVAL
    assert err(k.ioctl, kvm, K.KVM_CREATE_VM, REALM | 45) == errno.EINVAL  # above the RMM's S2SZ
    assert err(k.ioctl, kvm, K.KVM_CREATE_VM, REALM | 31) == errno.EINVAL
    assert err(k.ioctl, kvm, K.KVM_CREATE_VM, REALM | (1 << 12)) == errno.EINVAL
    assert k.vm(k.ioctl(kvm, K.KVM_CREATE_VM, REALM | 44)).arch.ipa_bits == 44
    assert k.vm(k.ioctl(kvm, K.KVM_CREATE_VM, REALM)).arch.ipa_bits == 40  # 0 means 40
    # without an RMM the realm type is refused and the capability reads 0
    k2 = cca_kernel(cca_rmi_available=False)
    kvm2 = k2.open("/dev/kvm", os.O_RDWR)
    assert k2.ioctl(kvm2, K.KVM_CHECK_EXTENSION, C.KVM_CAP_ARM_RMI) == 0
    assert err(k2.ioctl, kvm2, K.KVM_CREATE_VM, REALM) == errno.EINVAL
    k.close_all()
    k2.close_all()


def test_vgic_v2_refused_and_first_run_needs_an_in_kernel_gic(k):
    vmm = RealmVmm(k)
    assert err(k.ioctl, vmm.vm, A.KVM_CREATE_DEVICE,
               A.kvm_create_device(type=A.KVM_DEV_TYPE_ARM_VGIC_V2)) == errno.ENODEV
    vmm.add_ram(4 * P)
    vmm.create_vcpu(0)
    assert vmm.run() == -errno.EOPNOTSUPP
    assert vmm.vm_obj.arch.state == RealmState.NONE  # v14 checks before creating the RD
    vmm.create_vgic()
    vmm.finish_vgic()
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and vmm.vm_obj.arch.state == RealmState.ACTIVE


def test_v12_irqchip_check_after_marking_dead():
    k = cca_kernel(cca_revision="v12")
    vmm = RealmVmm(k, realm_type=1 << 8)
    vmm.add_ram(4 * P)
    vmm.create_vcpu(0)
    assert vmm.run() == -errno.EOPNOTSUPP
    assert vmm.vm_obj.arch.state == RealmState.DEAD
    k.close_all()


def test_missing_psci_kills_the_realm_at_activation(k):
    vmm = RealmVmm(k)
    vmm.create_vgic()
    vmm.add_ram(4 * P)
    vmm.create_vcpu(0, psci=False)
    vmm.finish_vgic()
    assert vmm.run() == -errno.EINVAL  # kvm_create_rec
    assert vmm.vm_obj.arch.state == RealmState.DEAD
    assert vmm.run() == -errno.EINVAL  # kvm_rec_pre_enter: not ACTIVE
    args = C.kvm_arm_rmi_populate(base=RAM, size=P, source_uaddr=0x10000)
    assert err(k.ioctl, vmm.vm, C.KVM_ARM_RMI_POPULATE, args) == errno.ENXIO  # DEAD


def test_vcpu_init_and_registers_of_a_rec(k):
    vmm = RealmVmm(k)
    fd = k.ioctl(vmm.vm, K.KVM_CREATE_VCPU, 0)
    init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
    init.features[0] = 1 << A.KVM_ARM_VCPU_EL1_32BIT
    assert err(k.ioctl, fd, A.KVM_ARM_VCPU_INIT, init) == errno.EINVAL
    import ctypes
    val = ctypes.c_uint64(0x1234)
    reg = A.kvm_one_reg(id=A.KVM_REG_ARM64_X(0), addr=ctypes.addressof(val))
    assert err(k.ioctl, fd, A.KVM_SET_ONE_REG, reg) == errno.ENOEXEC  # before VCPU_INIT
    init.features[0] = 1 << A.KVM_ARM_VCPU_PSCI_0_2
    k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
    k.ioctl(fd, A.KVM_SET_ONE_REG, reg)
    k.ioctl(fd, A.KVM_SET_ONE_REG, A.kvm_one_reg(id=A.KVM_REG_ARM64_PC, addr=ctypes.addressof(val)))
    sp = A.KVM_REG_ARM_CORE_REG(8 * 31)
    assert err(k.ioctl, fd, A.KVM_SET_ONE_REG, A.kvm_one_reg(id=sp, addr=ctypes.addressof(val))) \
        == errno.EINVAL  # only X0-X30 and PC on a realm
    out = ctypes.c_uint64(0)
    k.ioctl(fd, A.KVM_GET_ONE_REG, A.kvm_one_reg(id=A.KVM_REG_ARM64_X(0), addr=ctypes.addressof(out)))
    assert out.value == 0x1234


def test_destroy_returns_every_granule(k):
    vmm = RealmVmm(k).boot(size=32 * P)
    vmm.guest().write(RAM + 9 * P, b"x")
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    granules = vmm.vm_obj.vmtype.granules
    assert granules.count(GranuleState.DATA) == 2 and granules.count(GranuleState.RTT) > 0
    snap = k.snapshot()["cca"]
    assert snap["revision"] == "v14" and snap["granules"]["DATA"] == 2
    assert snap["realms"] == [{"state": "ACTIVE", "ipa_bits": 40, "assigned_pages": 2,
                               "destroyed": []}]
    arch = vmm.vm_obj.arch
    k.close_all()
    assert arch.state == RealmState.DEAD
    assert [g for g in GranuleState if g != GranuleState.UNDELEGATED and granules.count(g)] == []
