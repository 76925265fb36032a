"""How ioctl arguments are passed (DESIGN.md "The flow of one call"; fcntl.ioctl's rules;
reference §1 "Unreadable argument")."""

import ctypes
import errno

import pytest

from kmock import _libc
from kmock.uapi import kvm as K

from ._util import anon  # noqa: F401 (fixture)
from ._util import M2, P, create_gmem, create_vm, err, region2

G = 1 << 32


@pytest.fixture
def env(k, anon):
    kvm, vm = create_vm(k)
    slot = region2(1, G, M2 + P, uaddr=anon(M2 + P))
    assert k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, slot) == 0
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    return kvm, vm, vcpu


def test_bytes_returns_filled_copy(k, env):
    _, _, vcpu = env
    src = bytes(K.kvm_pre_fault_memory(gpa=G, size=M2))
    out = k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, src)
    assert isinstance(out, bytes) and len(out) == len(src)
    r = K.kvm_pre_fault_memory.from_buffer_copy(out)
    assert (r.gpa, r.size) == (G + M2, 0)
    assert K.kvm_pre_fault_memory.from_buffer_copy(src).size == M2  # the input is unchanged


def test_bytearray_updated_in_place(k, env):
    _, _, vcpu = env
    buf = bytearray(K.kvm_pre_fault_memory(gpa=G, size=M2))
    assert k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, buf) == 0
    r = K.kvm_pre_fault_memory.from_buffer(buf)
    assert (r.gpa, r.size) == (G + M2, 0)


def test_bytearray_not_mutated_with_mutate_flag_false(k, env):
    _, _, vcpu = env
    buf = bytearray(K.kvm_pre_fault_memory(gpa=G, size=M2))
    out = k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, buf, False)
    assert isinstance(out, bytes)
    assert K.kvm_pre_fault_memory.from_buffer(buf).size == M2
    assert K.kvm_pre_fault_memory.from_buffer_copy(out).size == 0


def test_ctypes_struct_updated_in_place(k, env):
    _, _, vcpu = env
    r = K.kvm_pre_fault_memory(gpa=G, size=M2 + 2 * P)
    assert k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, r) == 0  # progress, then no memslot
    assert (r.gpa, r.size) == (G + M2 + P, P)


def test_int_is_a_user_address(k, env):
    """An int argument of a struct ioctl is a user address: read, and written back."""
    _, vm, vcpu = env
    r = K.kvm_pre_fault_memory(gpa=G, size=M2)
    assert k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, ctypes.addressof(r)) == 0
    assert (r.gpa, r.size) == (G + M2, 0)
    args = K.kvm_create_guest_memfd(size=4 * P)
    fd = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, ctypes.addressof(args))
    assert k.fstat(fd).st_size == 4 * P


def test_int_address_of_a_mapping(k, env):
    """A struct living in a kmock mapping can be passed by its address, like in C."""
    _, vm, _ = env
    gmem = create_gmem(k, vm, P, K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED)
    m = k.mmap(gmem, P, _libc.PROT_READ | _libc.PROT_WRITE, _libc.MAP_SHARED)
    m[0:64] = bytes(K.kvm_create_guest_memfd(size=8 * P))
    fd = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, m.address)
    assert k.fstat(fd).st_size == 8 * P
    m.close()


@pytest.mark.parametrize("request_name", ["KVM_CREATE_GUEST_MEMFD", "KVM_SET_USER_MEMORY_REGION2",
                                          "KVM_SET_USER_MEMORY_REGION", "KVM_ENABLE_CAP",
                                          "KVM_SET_MEMORY_ATTRIBUTES"])
@pytest.mark.parametrize("address", [0, 1, 0xFFFF800000000000, (1 << 64) - 1], ids=hex)
def test_unreadable_address_efault(k, env, request_name, address):
    """§1 / §5.1 row 7: an argument pointer that cannot be read -> EFAULT."""
    _, vm, _ = env
    assert err(k.ioctl, vm, getattr(K, request_name), address) == errno.EFAULT


def test_pre_fault_null_efault(k, env):
    _, _, vcpu = env
    assert err(k.ioctl, vcpu, K.KVM_PRE_FAULT_MEMORY, 0) == errno.EFAULT


def test_readonly_address_write_back_efault(k, env):
    """copy_to_user into a read-only page fails with EFAULT (pre-fault writes the struct back)."""
    _, _, vcpu = env
    page = _libc.mmap(None, P, _libc.PROT_READ | _libc.PROT_WRITE,
                      _libc.MAP_PRIVATE | _libc.MAP_ANONYMOUS, -1, 0)
    try:
        ctypes.memmove(page, bytes(K.kvm_pre_fault_memory(gpa=G, size=P)), 64)
        _libc.mprotect(page, P, _libc.PROT_READ)
        assert err(k.ioctl, vcpu, K.KVM_PRE_FAULT_MEMORY, page) == errno.EFAULT
    finally:
        _libc.munmap(page, P)


def test_value_ioctls_take_the_int(k, env):
    """_IO ioctls take their argument by value (KVM_CREATE_VM type, KVM_CHECK_EXTENSION cap)."""
    kvm, vm, _ = env
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD_FLAGS) == 3
    assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD_FLAGS) == 3


def test_short_buffer_is_zero_extended_not_a_crash(k, env):
    """A buffer shorter than the struct is read as far as it goes (the rest reads as zero)."""
    _, vm, _ = env
    fd = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, bytearray((4 * P).to_bytes(8, "little")))
    assert k.fstat(fd).st_size == 4 * P


def test_immutable_buffer_over_1024_bytes_is_valueerror_like_fcntl(k):
    """fcntl.ioctl copies bytes (and buffers with mutate_flag=False) into a 1024-byte
    buffer and refuses longer ones with ValueError; kmock does the same."""
    kvm = k.open("/dev/kvm", 2)
    with pytest.raises(ValueError):
        k.ioctl(kvm, K.KVM_CHECK_EXTENSION, bytes(1025))
    with pytest.raises(ValueError):
        k.ioctl(kvm, K.KVM_CHECK_EXTENSION, bytearray(1025), False)
    assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, bytes(1024)) == bytes(1024)
