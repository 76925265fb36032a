"""KVM_SET_MEMORY_ATTRIBUTES on profile linux-6.18 (reference §4.7)."""

import errno
import os

import pytest

import kmock
from kmock.uapi import kvm as K

from ._util import (DEFAULT_VM, P, PRIVATE, SW_PROTECTED_VM, create_vm, err, mem_attrs,
                    needs_host_kvm)

U64 = (1 << 64) - 1


def set_attrs(k, vm, *args, **kw):
    return k.ioctl(vm, K.KVM_SET_MEMORY_ATTRIBUTES, mem_attrs(*args, **kw))


@pytest.fixture
def swp(k):
    return create_vm(k, SW_PROTECTED_VM)[1]


# (address, size, attributes, flags) violating rules; the first rule decides (all EINVAL).
# Rules: 1 flags, 2 unsupported attributes, 3 size 0 / overflow, 4 alignment.
ORDER_CASES = {
    "flags+attrs+size0+align": (1, 0, 1 << 60, 1),
    "flags only": (0, P, 0, 1),
    "attrs+size0": (0, 0, 1, 0),
    "attrs+unaligned": (1, 1, 1 << 4, 0),
    "attrs only": (0, P, 1, 0),
    "size0+unaligned": (1, 0, PRIVATE, 0),
    "size0 only": (0, 0, PRIVATE, 0),
    "overflow+unaligned": (U64 - 1, 3, PRIVATE, 0),
    "overflow only": (U64 - P + 1, P, PRIVATE, 0),
    "unaligned address only": (1, P, PRIVATE, 0),
    "unaligned size only": (0, P + 1, PRIVATE, 0),
}


@pytest.mark.parametrize("name", sorted(ORDER_CASES))
def test_check_order_all_einval(k, swp, name):
    """§4.7 check order flags -> attributes -> size 0/overflow -> alignment, each EINVAL."""
    a, s, attrs, flags = ORDER_CASES[name]
    assert err(set_attrs, k, swp, a, s, attrs, flags) == errno.EINVAL


def test_valid_calls_return_0(k, swp):
    """§4.7: no memslot needed; a valid private or shared range returns 0."""
    assert set_attrs(k, swp, 0, P, PRIVATE) == 0
    assert set_attrs(k, swp, 1 << 32, 1 << 30, PRIVATE) == 0
    assert set_attrs(k, swp, 0, P, 0) == 0
    # the highest representable range: address + size == 2**64 does not wrap below address
    assert err(set_attrs, k, swp, U64 - P + 1, P, PRIVATE) == errno.EINVAL  # wraps to 0
    assert set_attrs(k, swp, U64 - 2 * P + 1 & ~(P - 1), P, PRIVATE) == 0


def test_idempotent(k, swp):
    """§4.7: setting the value a range already has returns 0 (also for part of a range)."""
    for _ in range(3):
        assert set_attrs(k, swp, 0, 16 * P, PRIVATE) == 0
    assert set_attrs(k, swp, 4 * P, 4 * P, PRIVATE) == 0
    assert set_attrs(k, swp, 0, 16 * P, 0) == 0
    assert set_attrs(k, swp, 0, 16 * P, 0) == 0


def test_private_on_default_vm_einval_zero_ok(k):
    """§4.7: DEFAULT VM supports no attributes: PRIVATE -> EINVAL, attributes=0 -> 0 (no-op)."""
    _, vm = create_vm(k, DEFAULT_VM)
    assert err(set_attrs, k, vm, 0, P, PRIVATE) == errno.EINVAL
    assert set_attrs(k, vm, 0, P, 0) == 0
    # the range rules still apply with attributes=0
    assert err(set_attrs, k, vm, 0, 0, 0) == errno.EINVAL
    assert err(set_attrs, k, vm, 1, P, 0) == errno.EINVAL


def test_on_dev_kvm_einval(k):
    """§4.7 / §5.1 row 38: on /dev/kvm -> EINVAL, for any argument."""
    kvm, _ = create_vm(k)
    assert err(set_attrs, k, kvm, 0, P, PRIVATE) == errno.EINVAL
    assert err(set_attrs, k, kvm, 0, 0, 0, 1) == errno.EINVAL


def test_null_argument_efault(k, swp):
    """§1: an unreadable argument -> EFAULT (copy_from_user) before any rule."""
    assert err(k.ioctl, swp, K.KVM_SET_MEMORY_ATTRIBUTES, 0) == errno.EFAULT


@needs_host_kvm
def test_host_profile_enotty():
    """§4.7 / §5.1 row 37: without CONFIG_KVM_GENERIC_MEMORY_ATTRIBUTES -> ENOTTY."""
    with kmock.Kernel(profile="host") as h:
        assert K.KVM_CAP_MEMORY_ATTRIBUTES not in h.caps or not h.caps[K.KVM_CAP_MEMORY_ATTRIBUTES]
        _, vm = create_vm(h)
        for args in ((0, P, PRIVATE), (0, P, 0), (0, 0, 0)):
            assert err(set_attrs, h, vm, *args) == errno.ENOTTY


def _in_child(fn):
    """Run ``fn()`` in a forked child; return the errno it raised (0 on success)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 255
        try:
            os.close(r)
            try:
                fn()
                code = 0
            except OSError as e:
                code = e.errno
            os.write(w, code.to_bytes(2, "little"))
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 2)
    os.close(r)
    os.waitpid(pid, 0)
    assert len(data) == 2, "child died without reporting"
    return int.from_bytes(data, "little")


def test_from_forked_child_eio(k, swp):
    """§1 dispatch facts: a VM ioctl from another mm -> EIO, before the argument is read;
    /dev/kvm ioctls still work in the child."""
    kvm = k.open("/dev/kvm", os.O_RDWR)
    assert _in_child(lambda: set_attrs(k, swp, 0, P, PRIVATE)) == errno.EIO
    assert _in_child(lambda: k.ioctl(swp, K.KVM_SET_MEMORY_ATTRIBUTES, 0)) == errno.EIO
    assert _in_child(lambda: k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)) == 0
    # nothing changed in the parent: the call works here
    assert set_attrs(k, swp, 0, P, PRIVATE) == 0
