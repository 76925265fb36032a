"""Dirty page logging (kmock.kvm.dirty_log) on profile linux-6.18: KVM_GET_DIRTY_LOG and
KVM_CLEAR_DIRTY_LOG over the pages a scripted guest wrote. Errnos and alignment rules
were confirmed on a 6.18.44 host (conformance scenario dirty_log)."""

import ctypes
import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmock.uapi import kvm as K

from ._guest import P, GuestVM

LOG = K.KVM_MEM_LOG_DIRTY_PAGES
GPA = 1 << 30


def err(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def get(k, fd, slot, nbytes=16):
    buf = (ctypes.c_char * (nbytes + 8)).from_buffer_copy(b"\xaa" * (nbytes + 8))
    k.ioctl(fd, K.KVM_GET_DIRTY_LOG, K.kvm_dirty_log(slot=slot, dirty_bitmap=ctypes.addressof(buf)))
    assert buf.raw[nbytes:] == b"\xaa" * 8  # only the slot's whole longs are written
    return int.from_bytes(buf.raw[:nbytes], "little")


def clear(k, fd, slot, first, num, bits):
    buf = (ctypes.c_char * 16).from_buffer_copy(bits.to_bytes(16, "little"))
    return k.ioctl(fd, K.KVM_CLEAR_DIRTY_LOG, K.kvm_clear_dirty_log(
        slot=slot, first_page=first, num_pages=num, dirty_bitmap=ctypes.addressof(buf)))


def enable_manual(k, fd, a0):
    c = K.kvm_enable_cap(cap=K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
    c.args[0] = a0
    return k.ioctl(fd, K.KVM_ENABLE_CAP, c)


@pytest.fixture
def g(k):
    return GuestVM(k, vm_type=K.KVM_X86_DEFAULT_VM)


def test_layout_and_numbers():
    assert ctypes.sizeof(K.kvm_dirty_log) == 16 and ctypes.sizeof(K.kvm_clear_dirty_log) == 24
    assert (K.KVM_GET_DIRTY_LOG, K.KVM_CLEAR_DIRTY_LOG) == (0x4010AE42, 0xC018AEC0)


def test_guest_writes_three_pages_then_nothing(k, g):
    g.add_slot(0, GPA, 100 * P, flags=LOG)
    assert get(k, g.fd, 0) == 0
    w = g.guest().write(GPA + 5 * P, b"x" * (2 * P))  # pages 5, 6
    w2 = g.guest().write(GPA + 70 * P + 100, b"y")     # page 70
    g.guest().read(GPA + 40 * P, 8)                     # a read dirties nothing
    assert g.run() == (0, K.KVM_EXIT_HLT) and w.done and w2.done
    assert get(k, g.fd, 0) == (1 << 5) | (1 << 6) | (1 << 70)
    assert get(k, g.fd, 0) == 0  # read and cleared


def test_writes_to_an_unlogged_slot_leave_no_log(k, g):
    g.add_slot(0, GPA, 4 * P)
    g.guest().write(GPA, b"z")
    assert g.run() == (0, K.KVM_EXIT_HLT)
    assert err(get, k, g.fd, 0) == errno.ENOENT


def test_manual_protect_keeps_the_log_until_cleared(k, g):
    assert enable_manual(k, g.fd, K.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE) == 0
    g.add_slot(0, GPA, 100 * P, flags=LOG)
    g.guest().write(GPA + 3 * P, b"a" * (3 * P))  # pages 3..5
    g.guest().write(GPA + 80 * P, b"b")
    assert g.run() == (0, K.KVM_EXIT_HLT)
    want = (0b111 << 3) | (1 << 80)
    assert get(k, g.fd, 0) == want and get(k, g.fd, 0) == want
    assert clear(k, g.fd, 0, 0, 64, 1 << 4) == 0
    assert get(k, g.fd, 0) == want & ~(1 << 4)
    assert clear(k, g.fd, 0, 64, 36, 1 << 16) == 0  # page 80, the slot's tail
    assert get(k, g.fd, 0) == (1 << 3) | (1 << 5)


def test_initially_set_and_flag_toggles(k, g):
    assert enable_manual(k, g.fd, 3) == 0
    g.add_slot(0, GPA, 100 * P, flags=LOG)
    assert get(k, g.fd, 0) == (1 << 100) - 1
    r = K.kvm_userspace_memory_region2(slot=0, flags=0, guest_phys_addr=GPA,
                                       memory_size=100 * P, userspace_addr=g.slots[0]["hva"])
    k.ioctl(g.fd, K.KVM_SET_USER_MEMORY_REGION2, r)
    assert err(get, k, g.fd, 0) == errno.ENOENT
    assert enable_manual(k, g.fd, 1) == 0
    r.flags = LOG
    k.ioctl(g.fd, K.KVM_SET_USER_MEMORY_REGION2, r)
    assert get(k, g.fd, 0) == 0  # INITIALLY_SET is read when the bitmap is made


@pytest.mark.parametrize("first,num", [(1, 10), (0, 10), (64, 37), (128, 0), (100, 0)])
def test_clear_range_rules(k, g, first, num):
    enable_manual(k, g.fd, 3)
    g.add_slot(0, GPA, 100 * P, flags=LOG)
    assert err(clear, k, g.fd, 0, first, num, (1 << 100) - 1) == errno.EINVAL
    assert get(k, g.fd, 0) == (1 << 100) - 1  # nothing changed


def test_slot_checks_and_efault(k, g):
    g.add_slot(0, GPA, 100 * P, flags=LOG)
    g.add_slot(1, 1 << 32, P)
    assert err(get, k, g.fd, 2) == errno.ENOENT
    assert err(get, k, g.fd, 1) == errno.ENOENT
    assert err(get, k, g.fd, K.KVM_USER_MEM_SLOTS) == errno.EINVAL
    assert err(get, k, g.fd, 5 << 16) == errno.EINVAL
    g.guest().write(GPA, b"q")
    assert g.run() == (0, K.KVM_EXIT_HLT)
    bad = K.kvm_dirty_log(slot=0, dirty_bitmap=8)
    assert err(k.ioctl, g.fd, K.KVM_GET_DIRTY_LOG, bad) == errno.EFAULT
    assert get(k, g.fd, 0) == 0  # cleared before the failed copy, as the kernel does
    c = K.kvm_clear_dirty_log(slot=0, num_pages=64, dirty_bitmap=8)
    assert err(k.ioctl, g.fd, K.KVM_CLEAR_DIRTY_LOG, c) == errno.EFAULT


def test_move_keeps_the_bitmap_delete_drops_it(k, g):
    enable_manual(k, g.fd, 1)
    g.add_slot(0, GPA, 8 * P, flags=LOG)
    g.guest().write(GPA + P, b"m")
    assert g.run() == (0, K.KVM_EXIT_HLT)
    r = K.kvm_userspace_memory_region2(slot=0, flags=LOG, guest_phys_addr=GPA * 2,
                                       memory_size=8 * P, userspace_addr=g.slots[0]["hva"])
    k.ioctl(g.fd, K.KVM_SET_USER_MEMORY_REGION2, r)
    assert get(k, g.fd, 0, 8) == 0b10
    r.memory_size = 0
    k.ioctl(g.fd, K.KVM_SET_USER_MEMORY_REGION2, r)
    assert err(get, k, g.fd, 0, 8) == errno.ENOENT


# --- a model: a set of dirty pages ------------------------------------------------------------

NPAGES = 130
ops = st.lists(st.one_of(
    st.tuples(st.just("write"), st.integers(0, NPAGES - 1), st.integers(1, 40)),
    st.tuples(st.just("get")),
    # num: 64, to the slot's end, or any (mostly EINVAL)
    st.tuples(st.just("clear"), st.sampled_from([0, 64, 128, 1]),
              st.one_of(st.just(64), st.just(-1), st.integers(0, NPAGES)),
              st.integers(0, (1 << 130) - 1)),
), max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(manual=st.booleans(), ops=ops)
def test_log_matches_a_model(k, manual, ops):
    g = GuestVM(k, vm_type=K.KVM_X86_DEFAULT_VM)
    if manual:
        enable_manual(k, g.fd, 1)
    g.add_slot(0, GPA, NPAGES * P, flags=LOG)
    dirty = set()
    for op in ops:
        if op[0] == "write":
            _, page, n = op
            n = min(n, NPAGES - page)
            g.guest().write(GPA + page * P, b"w" * (n * P))
            assert g.run() == (0, K.KVM_EXIT_HLT)
            dirty |= set(range(page, page + n))
        elif op[0] == "get":
            assert get(k, g.fd, 0, 24) == sum(1 << p for p in dirty)
            if not manual:
                dirty.clear()
        else:
            _, first, num, bits = op
            if num == -1:
                num = NPAGES - first
            ok = first % 64 == 0 and first <= NPAGES and num <= NPAGES - first and (
                num == NPAGES - first or num % 64 == 0)
            buf = (ctypes.c_char * 24).from_buffer_copy(bits.to_bytes(24, "little"))
            c = K.kvm_clear_dirty_log(slot=0, first_page=first, num_pages=num,
                                      dirty_bitmap=ctypes.addressof(buf))
            if ok:
                assert k.ioctl(g.fd, K.KVM_CLEAR_DIRTY_LOG, c) == 0
                dirty -= {first + i for i in range(num) if bits >> i & 1}
            else:
                assert err(k.ioctl, g.fd, K.KVM_CLEAR_DIRTY_LOG, c) == errno.EINVAL
    assert get(k, g.fd, 0, 24) == sum(1 << p for p in dirty)
