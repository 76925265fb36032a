"""KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd, profile gmem-attributes-v12.

The deltas from v8 (docs/reference/gmem-attributes-v12.md): the capability number (251,
a setting), KVM_MEMSLOT_GMEM_ONLY for every guest_memfd memslot while the module
parameter is on, and the uoff_t bind offset. Everything else is v8's: the same ioctl
number and 128-byte struct with error_offset, the same validation order, the same
write-back rules (kvm_gmem_set_attributes in the applied virt/kvm/guest_memfd.c).
"""

import ctypes
import dataclasses
import mmap
import os

import pytest

import kmock
from kmock.kvm import conversion
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

from ._util import (DEFAULT_VM, GPA, INIT_SHARED, MMAP, PRIVATE, SLOT, SW_PROTECTED_VM, P,
                    V8, err, errno)
from .test_v8_uapi import ORDER

V12 = kmock.profiles.get("gmem-attributes-v12")
CAP = 251


@pytest.fixture
def k12():
    with kmock.Kernel(profile="gmem-attributes-v12") as kernel:
        yield kernel


def kernel_with(**changes):
    return kmock.Kernel(profile=dataclasses.replace(V12, **changes))


# --- the numbers and the profile ------------------------------------------------------------


def test_numbers():
    assert G.SET_MEMORY_ATTRIBUTES2_BY_REVISION["gmem-attributes-v12"] == 0xC080AED2
    assert G.CAPS_BY_REVISION["gmem-attributes-v12"]["KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"] == CAP
    assert ctypes.sizeof(G.kvm_memory_attributes2) == 128
    assert G.kvm_memory_attributes2.error_offset.offset == 32  # 681f3b68f435: kept in the applied UAPI


def test_profile_and_model():
    assert "gmem-attributes-v12" in kmock.profiles.names()
    assert V12.conversion == "attributes-v8" and V12.conversion_revision == 12
    assert V12.gmem_in_place_conversion
    assert isinstance(conversion.model_for(V12), conversion.AttributesV12)


def test_v8_and_rfc_v2_unchanged():
    """The older revisions stay what they were: users test against the revision they carry."""
    v8 = kmock.profiles.get("gmem-attributes-v8")
    assert v8.caps_named["KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES"] == 250
    assert type(conversion.model_for(v8)) is conversion.AttributesV8
    assert type(conversion.model_for(kmock.profiles.get("gmem-convert-rfc-v2"))) is conversion.RfcV2
    assert v8.gmem_bind_offset_overflow_accepted


def test_cap_values(k12):
    """Cap 251: /dev/kvm 8; SW_PROTECTED VM 8; DEFAULT VM 0; v8's 250 means nothing here."""
    swp = V8(k12, bind=False)
    dflt = V8(k12, vm_type=DEFAULT_VM, flags=0, bind=False)
    assert k12.ioctl(swp.kvm, K.KVM_CHECK_EXTENSION, CAP) == PRIVATE
    assert k12.ioctl(swp.vm, K.KVM_CHECK_EXTENSION, CAP) == PRIVATE
    assert k12.ioctl(dflt.vm, K.KVM_CHECK_EXTENSION, CAP) == 0
    assert k12.ioctl(swp.vm, K.KVM_CHECK_EXTENSION, 250) == 0
    assert k12.ioctl(swp.vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == 0


@pytest.mark.parametrize("number", [250, 252])
def test_cap_number_is_a_setting(number):
    """The applied series' number is unconfirmed: caps_named moves it."""
    with kernel_with(caps_named={"KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES": number}) as k:
        env = V8(k, bind=False)
        assert k.ioctl(env.vm, K.KVM_CHECK_EXTENSION, number) == PRIVATE
        assert k.ioctl(env.vm, K.KVM_CHECK_EXTENSION, CAP) == 0


def test_parameter_off():
    """kvm.gmem_in_place_conversion=0: ENOTTY before anything is read; cap 0."""
    with kernel_with(gmem_in_place_conversion=False) as k:
        env = V8(k, flags=0)
        assert err(k.ioctl, env.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, 0) == errno.ENOTTY
        good = G.kvm_memory_attributes2(offset=0, size=P, attributes=PRIVATE)
        assert err(k.ioctl, env.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, good) == errno.ENOTTY
        assert k.ioctl(env.vm, K.KVM_CHECK_EXTENSION, CAP) == 0


# --- validation and write-back: v8's -----------------------------------------------------------


def test_efault_first(k12):
    env = V8(k12)
    assert err(k12.ioctl, env.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, 0) == errno.EFAULT


@pytest.mark.parametrize("name", sorted(ORDER))
def test_einval_rules_write_nothing_back(k12, name):
    off, size, attrs, flags, reserved = ORDER[name]
    env = V8(k12, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pin = k12.gup_pin(m, 0, 4 * P)  # validation precedes the refcount check
    r, a = env.set_attrs(off, size, attrs, flags=flags, reserved=reserved, error_offset=0x1234)
    assert r == errno.EINVAL and a.error_offset == 0x1234
    assert env.gmem_snapshot()["private_pages"] == 0
    pin.unpin()


def test_non_private_vm_type_einval(k12):
    env = V8(k12, vm_type=DEFAULT_VM, flags=MMAP | INIT_SHARED, bind=False)
    assert env.set_attrs(0, P, PRIVATE)[0] == errno.EINVAL


def test_eagain_writes_back_error_offset_clamped(k12):
    """dcde2f853ff4: EAGAIN copies the whole struct back, error_offset = max(start, folio)."""
    env = V8(k12, size=8 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pins = [k12.gup_pin(m, i * P, P) for i in (1, 5)]
    r, a = env.set_attrs(2 * P, 6 * P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == 5 * P
    assert env.gmem_snapshot()["private_pages"] == 0
    for p in pins:
        p.unpin()
    r, a = env.set_attrs(2 * P, 6 * P, PRIVATE, error_offset=0x77)
    assert r == 0 and a.error_offset == 0x77  # success writes nothing back


def test_to_shared_never_checks_refcounts(k12):
    env = V8(k12, size=4 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pin = k12.gup_pin(m, 0, P)
    assert env.set_attrs(P, 3 * P, PRIVATE)[0] == 0
    assert env.set_attrs(0, 4 * P, 0)[0] == 0
    pin.unpin()


# --- KVM_MEMSLOT_GMEM_ONLY without GUEST_MEMFD_FLAG_MMAP ------------------------------------------


def _shared_gmem_without_mmap_flag(k):
    """A SW_PROTECTED VM, an INIT_SHARED guest_memfd without MMAP bound at GPA, the slot's
    userspace_addr on anonymous memory filled with 'U'."""
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, SW_PROTECTED_VM)
    gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=P, flags=INIT_SHARED))
    buf = mmap.mmap(-1, P)
    buf[:] = b"U" * P
    uaddr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
        slot=SLOT, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=P,
        userspace_addr=uaddr, guest_memfd=gmem))
    vcpu_fd = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    script = k.vm(vm).vcpus[0].guest
    read = script.read(GPA, 4)
    script.hlt()
    k.ioctl(vcpu_fd, K.KVM_RUN, 0)
    return read.result, buf


def test_shared_guest_access_comes_from_guest_memfd(k12):
    """2e646bcfcf90: with the parameter on the memslot is GMEM_ONLY, so a shared guest read
    is served by guest_memfd (a fresh, zeroed page), not by userspace_addr."""
    data, _buf = _shared_gmem_without_mmap_flag(k12)
    assert data == b"\0" * 4


def test_v8_profile_still_reads_userspace_addr():
    """The v8 profile keeps its behaviour (MMAP decides GMEM_ONLY there)."""
    with kmock.Kernel(profile="gmem-attributes-v8") as k:
        data, _buf = _shared_gmem_without_mmap_flag(k)
        assert data == b"UUUU"


# --- the binding: uoff_t offset --------------------------------------------------------------------


def test_bind_offset_overflow_einval(k12):
    """kvm_gmem_bind takes a uoff_t offset: offset + size past i_size is EINVAL even where
    6.18's loff_t sum wrapped negative (profile setting gmem_bind_offset_overflow_accepted)."""
    env = V8(k12, bind=False)
    region = K.kvm_userspace_memory_region2(
        slot=2, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 33, memory_size=P,
        guest_memfd=env.gmem, guest_memfd_offset=0x7FFFFFFFFFFFF000)
    assert err(k12.ioctl, env.vm, K.KVM_SET_USER_MEMORY_REGION2, region) == errno.EINVAL
    with kmock.Kernel(profile="gmem-attributes-v8") as k8:
        env8 = V8(k8, bind=False)
        region.guest_memfd = env8.gmem
        assert k8.ioctl(env8.vm, K.KVM_SET_USER_MEMORY_REGION2, region) == 0


def test_overlapping_binding_is_eexist(k12):
    """kvm_gmem_commit_memory_region (the applied series): a guest_memfd range already bound
    to a memslot is -EEXIST; 6.18 and v8's kvm_gmem_bind say EINVAL (profile setting
    gmem_bind_overlap_errno). Nothing is created: the first binding stays the only one."""
    env = V8(k12)  # slot SLOT binds the guest_memfd from offset 0

    def second(k, e):
        region = K.kvm_userspace_memory_region2(
            slot=SLOT + 1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 34,
            memory_size=P, guest_memfd=e.gmem, guest_memfd_offset=0)
        return err(k.ioctl, e.vm, K.KVM_SET_USER_MEMORY_REGION2, region)

    assert second(k12, env) == errno.EEXIST
    assert [s["slot"] for s in k12.snapshot()["vms"][0]["memslots"]] == [SLOT]
    with kmock.Kernel(profile="gmem-attributes-v8") as k8:
        assert second(k8, V8(k8)) == errno.EINVAL
