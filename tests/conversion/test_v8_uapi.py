"""KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd fd, v8 UAPI details (reference §2.2-2.5).

Validation order (§2.3): module parameter off -> ENOTTY; copy_from_user -> EFAULT;
flags; reserved; non-private VM; attributes; size 0 / overflow; alignment; range (all
EINVAL); then the core (EAGAIN). Inputs that break two rules must fail with the
first rule's errno wherever the errnos differ.
"""

import dataclasses

import pytest

import kmock
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

from ._util import (DEFAULT_VM, INIT_SHARED, MMAP, PRIVATE, U64, P, V8, err,
                    errno)

CAP = G.KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES  # 250 in v8


@pytest.fixture
def k_off():
    """v8 with kvm.gmem_in_place_conversion=0."""
    profile = dataclasses.replace(kmock.profiles.get("gmem-attributes-v8"),
                                  gmem_in_place_conversion=False)
    with kmock.Kernel(profile=profile) as kernel:
        yield kernel


def ioctl2(env, arg):
    return env.k.ioctl(env.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, arg)


# --- the numbers ----------------------------------------------------------------------


def test_numbers():
    assert G.KVM_SET_MEMORY_ATTRIBUTES2 == 0xC080AED2
    assert CAP == 250
    assert PRIVATE == 8


def test_cap_values(k8):
    """cap 250: /dev/kvm 8 (parameter on); SW_PROTECTED VM 8; DEFAULT VM 0."""
    swp = V8(k8, bind=False)
    dflt = V8(k8, vm_type=DEFAULT_VM, flags=0, bind=False)
    assert k8.ioctl(swp.kvm, K.KVM_CHECK_EXTENSION, CAP) == PRIVATE
    assert k8.ioctl(swp.vm, K.KVM_CHECK_EXTENSION, CAP) == PRIVATE
    assert k8.ioctl(dflt.vm, K.KVM_CHECK_EXTENSION, CAP) == 0
    # v8 has no KVM_CAP_MEMORY_ATTRIBUTES2; in-place mode reports no VM attributes
    assert k8.ioctl(swp.vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == 0


def test_cap_values_parameter_off(k_off):
    env = V8(k_off, flags=0, bind=False)
    assert k_off.ioctl(env.kvm, K.KVM_CHECK_EXTENSION, CAP) == 0
    assert k_off.ioctl(env.vm, K.KVM_CHECK_EXTENSION, CAP) == 0


def test_vm_level_set_memory_attributes_private_einval(k8):
    """§2.2: with the module parameter on, the VM ioctl with PRIVATE -> EINVAL."""
    env = V8(k8, bind=False)
    a = K.kvm_memory_attributes(address=0, size=P, attributes=PRIVATE, flags=0)
    assert err(k8.ioctl, env.vm, K.KVM_SET_MEMORY_ATTRIBUTES, a) == errno.EINVAL


def test_vm_level_set_memory_attributes_shared_ok(k8):
    env = V8(k8, bind=False)
    a = K.kvm_memory_attributes(address=0, size=P, attributes=0, flags=0)
    assert k8.ioctl(env.vm, K.KVM_SET_MEMORY_ATTRIBUTES, a) == 0


# --- validation order ---------------------------------------------------------------------


def test_enotty_when_parameter_off_beats_efault_and_einval(k_off):
    env = V8(k_off, flags=0)
    assert err(ioctl2, env, 0) == errno.ENOTTY  # a bad pointer: ENOTTY first
    bad = G.kvm_memory_attributes2(offset=1, size=0, attributes=3, flags=1)
    assert err(ioctl2, env, bad) == errno.ENOTTY
    good = G.kvm_memory_attributes2(offset=0, size=P, attributes=0)
    assert err(ioctl2, env, good) == errno.ENOTTY


def test_efault_for_a_bad_pointer(k8):
    env = V8(k8)
    assert err(ioctl2, env, 0) == errno.EFAULT
    assert err(ioctl2, env, 8) == errno.EFAULT


def test_efault_before_the_vm_type_check(k8):
    """copy_from_user comes before every EINVAL rule, also on a DEFAULT VM's gmem."""
    env = V8(k8, vm_type=DEFAULT_VM, flags=0, bind=False)
    assert err(ioctl2, env, 0) == errno.EFAULT


# (offset, size, attributes, flags, reserved) breaking several EINVAL rules at once.
ORDER = {
    "flags+reserved+attrs+size0+unaligned+range": (1, 0, 3, 1, {3: 1}),
    "reserved+attrs": (0, P, 1, 0, {10: 1}),
    "attrs+size0": (0, 0, 1 << 4, 0, None),
    "attrs+range": (64 * P, P, 1, 0, None),
    "size0+unaligned": (1, 0, PRIVATE, 0, None),
    "overflow+unaligned": (U64 - 1, 3, PRIVATE, 0, None),
    "overflow+range": (U64 - P + 1, P, PRIVATE, 0, None),
    "unaligned+range": (64 * P + 1, P, PRIVATE, 0, None),
    "offset == i_size": (4 * P, P, PRIVATE, 0, None),
    "end > i_size": (3 * P, 2 * P, PRIVATE, 0, None),
}


@pytest.mark.parametrize("name", sorted(ORDER))
def test_einval_rules_write_nothing_back(k8, name):
    """Each combination is EINVAL; a validation error writes nothing back."""
    off, size, attrs, flags, reserved = ORDER[name]
    env = V8(k8, flags=MMAP | INIT_SHARED)
    r, a = env.set_attrs(off, size, attrs, flags=flags, reserved=reserved,
                         error_offset=0x1234)
    assert r == errno.EINVAL
    assert a.error_offset == 0x1234
    assert env.gmem_snapshot()["private_pages"] == 0


@pytest.mark.parametrize("name", sorted(ORDER))
def test_einval_rules_before_eagain(k8, name):
    """Validation comes before the core: a pinned page never turns EINVAL into EAGAIN."""
    off, size, attrs, flags, reserved = ORDER[name]
    env = V8(k8, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pin = k8.gup_pin(m, 0, 4 * P)
    r, a = env.set_attrs(off, size, attrs, flags=flags, reserved=reserved)
    assert r == errno.EINVAL and a.error_offset == 0
    pin.unpin()


def test_non_private_vm_type_einval(k8):
    """Rule 5: a DEFAULT VM's guest_memfd cannot convert, even a valid request; rules
    3-4 (flags, reserved) still come first, and both are EINVAL; rule 5 precedes the
    core, so no EAGAIN either."""
    env = V8(k8, vm_type=DEFAULT_VM, flags=MMAP | INIT_SHARED, bind=False)
    for attrs in (0, PRIVATE):
        r, a = env.set_attrs(0, P, attrs, error_offset=7)
        assert r == errno.EINVAL and a.error_offset == 7
    m = env.mmap()
    pin = k8.gup_pin(m, 0, P)
    assert env.set_attrs(0, P, PRIVATE)[0] == errno.EINVAL
    pin.unpin()


def test_error_offset_input_not_validated(k8):
    """Rule 10: the input error_offset is ignored (contrast RFC v2, where != 0 is EINVAL)."""
    env = V8(k8)
    r, a = env.set_attrs(0, P, 0, error_offset=0xFFFF_FFFF_FFFF_F000)
    assert r == 0


def test_reserved_each_word_checked(k8):
    env = V8(k8)
    for i in range(11):
        assert env.set_attrs(0, P, 0, reserved={i: 1})[0] == errno.EINVAL


def test_highest_valid_range(k8):
    env = V8(k8, size=4 * P)
    assert env.set_attrs(3 * P, P, 0)[0] == 0
    assert env.set_attrs(0, 4 * P, PRIVATE)[0] == 0


# --- outputs ----------------------------------------------------------------------------


def test_success_writes_nothing_back(k8):
    """On success the struct is not written back: error_offset keeps its input value."""
    env = V8(k8)
    for attrs in (0, PRIVATE, PRIVATE):  # a real change, the reverse, and a no-op
        r, a = env.set_attrs(P, 2 * P, attrs, error_offset=0xDEAD000)
        assert r == 0 and a.error_offset == 0xDEAD000


def test_bytes_argument_gets_the_struct_back_on_eagain(k8):
    """fcntl.ioctl's bytes rule: the copy returned holds the kernel's write-back."""
    env = V8(k8, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pin = k8.gup_pin(m, 2 * P, P)
    buf = bytearray(G.kvm_memory_attributes2(offset=0, size=4 * P, attributes=PRIVATE))
    assert err(k8.ioctl, env.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, buf) == errno.EAGAIN
    assert G.kvm_memory_attributes2.from_buffer_copy(buf).error_offset == 2 * P
    pin.unpin()


def test_error_offset_clamped_to_the_request(k8):
    """error_offset = max(offset, folio start) of the first refused folio in range: pins
    before the range are not reported, the first pin inside it is."""
    env = V8(k8, size=8 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pins = [k8.gup_pin(m, i * P, P) for i in (1, 5, 6)]
    r, a = env.set_attrs(2 * P, 6 * P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == 5 * P
    r, a = env.set_attrs(6 * P, 2 * P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == 6 * P
    # no pin in [2, 5): fine
    assert env.set_attrs(2 * P, 3 * P, PRIVATE)[0] == 0
    # a pin spanning several pages is reported at the first page inside the range
    for p in pins:
        p.unpin()
    env.to_shared(0, 8 * P)
    big = k8.gup_pin(m, 0, 4 * P)
    r, a = env.set_attrs(2 * P, 2 * P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == 2 * P
    big.unpin()


def test_no_op_conversion_ignores_pins(k8):
    """If the whole range already has the attributes nothing is checked: a pinned shared
    page converted to shared, or a range that is already private, succeeds."""
    env = V8(k8, size=4 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    pin = k8.gup_pin(m, P, P)
    assert env.set_attrs(0, 4 * P, 0)[0] == 0
    assert env.set_attrs(P, P, 0)[0] == 0
    env.to_private(2 * P, 2 * P)
    assert env.set_attrs(2 * P, 2 * P, PRIVATE)[0] == 0
    assert env.set_attrs(0, 2 * P, PRIVATE)[0] == errno.EAGAIN
    pin.unpin()


def test_eagain_is_atomic(k8):
    """A refused conversion changes no attribute, pin, mapping or byte (§2.4: the check
    runs before the store)."""
    env = V8(k8, size=8 * P, flags=MMAP | INIT_SHARED)
    m = env.mmap()
    env.to_private(6 * P, 2 * P)
    for i in range(6):
        m[i * P:i * P + 4] = bytes([i]) * 4
    pin = k8.gup_pin(m, 4 * P, P)
    before = k8.snapshot()
    contents = bytes(m[0:6 * P])
    r, a = env.set_attrs(0, 8 * P, PRIVATE)
    assert r == errno.EAGAIN and a.error_offset == 4 * P
    assert k8.snapshot() == before
    assert bytes(m[0:6 * P]) == contents
    pin.unpin()
