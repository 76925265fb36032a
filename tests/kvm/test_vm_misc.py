"""KVM_SET_PMU_EVENT_FILTER (kmock.kvm.x86_pmu), K.KVM_GET_EMULATED_CPUID
(kmock.kvm.device) and K.KVM_RESET_DIRTY_RINGS (kmock.kvm.x86_vm) on profile linux-6.18.

Errnos and their order come from arch/x86/kvm/pmu.c kvm_vm_ioctl_set_pmu_event_filter,
cpuid.c kvm_dev_ioctl_get_cpuid and kvm_main.c kvm_vm_ioctl_reset_dirty_pages (6.18),
confirmed on the 6.18.44 host by the conformance scenarios x86_pmu_event_filter,
x86_emulated_cpuid and x86_dirty_ring_reset; these tests pin the mock's model, its
stored state and what the conformance scenarios cannot reach (unreadable memory).
"""

import ctypes
import errno
import types

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

import kmock
from kmock import _libc
from kmock.kvm import device as D
from kmock.kvm import x86_pmu as PMU
from kmock.kvm import x86_vm as X
from kmock.testing.conformance_x86_vm_misc import cpuid_buf, masked, pmu_filter
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._util import create_vm, err, errno_or_0

SET = X86.KVM_SET_PMU_EVENT_FILTER
GET_EMU = K.KVM_GET_EMULATED_CPUID
ENTRY = ctypes.sizeof(K.kvm_cpuid_entry2)
P = 4096
ALL_UMASK = 0xFF << 56


def pmu_state(k, vm):
    return X.state(k.file(vm).vm).pmu_event_filter


def guard_page():
    """Two pages, the second PROT_NONE: returns (address of the boundary, unmap)."""
    addr = _libc.mmap(None, 2 * P, _libc.PROT_READ | _libc.PROT_WRITE,
                      _libc.MAP_PRIVATE | _libc.MAP_ANONYMOUS, -1, 0)
    _libc.mprotect(addr + P, P, _libc.PROT_NONE)
    return addr + P, lambda: _libc.munmap(addr, 2 * P)


# --- KVM_SET_PMU_EVENT_FILTER ------------------------------------------------------------------


def test_no_filter_until_set(k):
    _, vm = create_vm(k)
    assert pmu_state(k, vm) is None


def test_unmasked_filter_stored_in_kernel_form(k):
    """convert_to_masked_filter: an all-ones umask mask; events with bits outside event
    select | umask dropped; sorted by event select; pads unchecked."""
    _, vm = create_vm(k)
    evs = (0x1C2, 1 << 63, 0xC0, 1 << 32 | 0x3C, 0x13C)
    assert k.ioctl(vm, SET, pmu_filter(nevents=len(evs), events=evs, fixed=5,
                                       pad=(1, 2, 3, 4))) == 0
    f = pmu_state(k, vm)
    assert f.action == X86.KVM_PMU_EVENT_ALLOW and f.fixed_counter_bitmap == 5
    assert f.events == (0x13C | ALL_UMASK, 0xC0 | ALL_UMASK, 0x1C2 | ALL_UMASK)
    assert f.nr_includes == 3 and f.excludes == ()
    assert f.allows_gp_event(0x01C2) and f.allows_gp_event(0x00C0)
    assert not f.allows_gp_event(0x02C2)  # umask 2 is not listed (match is the full umask)
    assert not f.allows_gp_event(0x2E)
    assert [f.allows_fixed_counter(i) for i in range(3)] == [True, False, True]


def test_masked_filter_includes_excludes(k):
    _, vm = create_vm(k)
    evs = (masked(0x2E, 0x41, 0x4F, exclude=True), masked(0x2E, 0, 0), masked(0xC0, 1, 1))
    assert k.ioctl(vm, SET, pmu_filter(action=1, flags=1, nevents=3, events=evs)) == 0
    f = pmu_state(k, vm)
    assert f.nr_includes == 2 and f.excludes == (masked(0x2E, 0x41, 0x4F, exclude=True),)
    # DENY: an event included and not excluded is denied, everything else allowed
    assert not f.allows_gp_event(0x012E)
    assert f.allows_gp_event(0x412E)  # excluded (umask & 0x4f == 0x41)
    assert not f.allows_gp_event(0x01C0) and f.allows_gp_event(0x02C0)
    assert f.allows_gp_event(0x003C)
    assert f.allows_fixed_counter(0)  # deny, bitmap 0: every fixed counter allowed
    assert "deny" in repr(f)


def test_allow_without_events_allows_only_listed_fixed_counters(k):
    _, vm = create_vm(k)
    assert k.ioctl(vm, SET, pmu_filter(fixed=2)) == 0
    f = pmu_state(k, vm)
    assert not f.allows_gp_event(0xC0)
    assert [f.allows_fixed_counter(i) for i in range(3)] == [False, True, False]


@pytest.mark.parametrize("kw, want", [
    ({"action": 2}, errno.EINVAL),
    ({"action": 0xFFFFFFFF, "nevents": 301}, errno.EINVAL),  # action before nevents
    ({"flags": 2}, errno.EINVAL),
    ({"flags": 1 << 31, "nevents": 301}, errno.EINVAL),  # flags before nevents
    ({"nevents": 301}, errno.E2BIG),
    ({"nevents": 0xFFFFFFFF}, errno.E2BIG),
    ({"flags": 1, "nevents": 301, "events": [1 << 16] * 301}, errno.E2BIG),
    ({"flags": 1, "nevents": 1, "events": (1 << 16,)}, errno.EINVAL),
    ({"flags": 1, "nevents": 1, "events": (masked(0x1C0),)}, errno.EINVAL),  # Intel: no bit 32
    ({"flags": 1, "nevents": 2, "events": (0xC0, 1 << 54)}, errno.EINVAL),
    ({"nevents": 300}, 0),
    ({"flags": 1, "nevents": 1, "events": (0xC0, 1 << 16)}, 0),  # beyond nevents: unread
])
def test_pmu_filter_errors(k, kw, want):
    _, vm = create_vm(k)
    assert k.ioctl(vm, SET, pmu_filter(nevents=1, events=(0xC0,))) == 0
    before = pmu_state(k, vm)
    got = errno_or_0(k.ioctl, vm, SET, pmu_filter(**kw))
    assert got == want
    assert (pmu_state(k, vm) is before) == bool(want)  # a failure changes nothing


def test_pmu_filter_user_memory_faults(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, SET, 0) == errno.EFAULT
    edge, unmap = guard_page()
    try:
        head = edge - ctypes.sizeof(X86.kvm_pmu_event_filter)
        ctypes.memmove(head, bytes(X86.kvm_pmu_event_filter(nevents=0)), 32)
        assert k.ioctl(vm, SET, head) == 0  # no event to read
        ctypes.memmove(head, bytes(X86.kvm_pmu_event_filter(nevents=1)), 32)
        assert err(k.ioctl, vm, SET, head) == errno.EFAULT  # the events copy
        ctypes.memmove(head, bytes(X86.kvm_pmu_event_filter(nevents=1, flags=4)), 32)
        assert err(k.ioctl, vm, SET, head) == errno.EINVAL  # flags before the copy
        assert err(k.ioctl, vm, SET, edge - 8) == errno.EFAULT  # the header
    finally:
        unmap()


def test_pmu_filter_wrong_fds_and_python_misuse(k):
    kvm, vm = create_vm(k)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, kvm, SET, pmu_filter()) == errno.EINVAL
    assert err(k.ioctl, cpu, SET, pmu_filter()) == errno.EINVAL
    assert k.ioctl(vm, SET, pmu_filter()) == 0  # vCPUs do not matter
    with pytest.raises(TypeError):
        k.ioctl(vm, SET, 1.5)  # as fcntl.ioctl
    assert err(k.ioctl, vm, SET, "xyz") == errno.EINVAL  # a str is a buffer: action 0x7a7978
    k.file(vm).vm.kill("test")
    assert err(k.ioctl, vm, SET, pmu_filter()) == errno.EIO


def test_eventsel_event_follows_the_vendor():
    def prof(vendor):
        b = vendor.encode()
        regs = [int.from_bytes(b[i:i + 4], "little") for i in (0, 8, 4)]  # EBX, ECX, EDX
        return types.SimpleNamespace(cpuid=((0, 0, 0, 0x10, *regs),))

    assert PMU.eventsel_event(prof("GenuineIntel")) == PMU.EVENTSEL_EVENT_INTEL
    assert PMU.eventsel_event(prof("AuthenticAMD")) == PMU.EVENTSEL_EVENT_AMD
    assert PMU.eventsel_event(prof("HygonGenuine")) == PMU.EVENTSEL_EVENT_AMD
    assert PMU.eventsel_event(types.SimpleNamespace(cpuid=())) == PMU.EVENTSEL_EVENT_INTEL
    evs, n = PMU.prepare_events([masked(0x1C0)], 1, PMU.EVENTSEL_EVENT_AMD)
    assert evs == (masked(0x1C0),) and n == 1
    with pytest.raises(OSError) as e:
        PMU.prepare_events([masked(0x1C0)], 1, PMU.EVENTSEL_EVENT_INTEL)
    assert e.value.errno == errno.EINVAL


def _model(action, flags, nevents, events):
    """The check order of kvm_vm_ioctl_set_pmu_event_filter, written independently."""
    if action > 1 or flags & ~1:
        return errno.EINVAL
    if nevents > 300:
        return errno.E2BIG
    if flags & 1:
        valid = 0xFF | 0xFF << 8 | 1 << 55 | 0xFF << 56
        if any(e & ~valid for e in events[:nevents]):
            return errno.EINVAL
    return 0


_bits = st.sampled_from([0, 8, 15, 16, 32, 35, 54, 55, 56, 63])
_event = st.one_of(st.integers(0, 0xFFFF), st.builds(lambda b, v: v | 1 << b, _bits,
                                                     st.integers(0, 0xFF)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(action=st.sampled_from([0, 1, 2, 0xFFFFFFFF]), flags=st.sampled_from([0, 1, 2, 3]),
       nevents=st.sampled_from([0, 1, 2, 5, 300, 301]), events=st.lists(_event, max_size=5))
def test_pmu_filter_against_model(k, action, flags, nevents, events):
    _, vm = create_vm(k)
    evs = (events + [0] * nevents)[:nevents] if nevents <= 300 else events
    want = _model(action, flags, nevents, evs)
    got = errno_or_0(k.ioctl, vm, SET, pmu_filter(action, nevents, 0, flags, events=evs))
    assert got == want
    f = pmu_state(k, vm)
    if want:
        assert f is None
        return
    assert (f.action, f.flags) == (action, flags)
    if flags & 1:
        assert sorted(f.events) == sorted(evs[:nevents])
        assert all(e & 1 << 55 for e in f.excludes)
        assert not any(e & 1 << 55 for e in f.includes)
    else:
        assert sorted(f.events) == sorted(e | ALL_UMASK for e in evs if not e & ~0xFFFF)


# --- K.KVM_GET_EMULATED_CPUID ----------------------------------------------------------------------


def test_emulated_cpuid_table(k):
    kvm, _ = create_vm(k)
    buf = cpuid_buf(4)
    assert k.ioctl(kvm, GET_EMU, buf) == 0
    assert int.from_bytes(buf[0:4], "little") == 3
    es = (K.kvm_cpuid_entry2 * 3).from_buffer_copy(buf, 8)
    assert [(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx) for e in es] == [
        (0, 0, 0, 7, 0, 0, 0), (1, 0, 0, 0, 0, 1 << 22, 0), (7, 0, 1, 0, 0, 1 << 22, 0)]
    assert not any(buf[8 + 3 * ENTRY:])


def test_emulated_cpuid_rdpid_needs_rdtscp(k):
    """kvm_cpu_cap_has(RDTSCP): the supported table's 0x80000001 EDX bit 27."""
    cpuid = tuple(e if e[0] != 0x80000001 else e[:6] + (e[6] & ~(1 << 27),)
                  for e in k.profile.cpuid)
    with kmock.Kernel(profile="linux-6.18", cpuid=cpuid) as k2:
        assert D.emulated_cpuid(k2.profile)[2] == (7, 0, 1, 0, 0, 0, 0)
        kvm, _ = create_vm(k2)
        buf = cpuid_buf(8)
        assert k2.ioctl(kvm, GET_EMU, buf) == 0
        assert K.kvm_cpuid_entry2.from_buffer_copy(buf, 8 + 2 * ENTRY).ecx == 0
    assert D.emulated_cpuid(k.profile)[2][5] == 1 << 22


@pytest.mark.parametrize("nent", [0, 1, 2, 3])
def test_emulated_cpuid_too_small_writes_nothing(k, nent):
    kvm, _ = create_vm(k)
    buf = cpuid_buf(nent, head_pad=7)
    before = bytes(buf)
    assert err(k.ioctl, kvm, GET_EMU, buf) == errno.E2BIG
    assert bytes(buf) == before


def test_emulated_cpuid_cap_and_padding(k):
    kvm, vm = create_vm(k)
    buf = cpuid_buf(0xFFFFFFFF, head_pad=0xABCD)
    assert k.ioctl(kvm, GET_EMU, buf) == 0
    assert buf[0:8] == (3).to_bytes(4, "little") + (0xABCD).to_bytes(4, "little")
    assert err(k.ioctl, kvm, GET_EMU, cpuid_buf(0xFFFFFFFF, pad_at=(255,))) == errno.EINVAL
    assert k.ioctl(kvm, GET_EMU, cpuid_buf(4, pad_at=(4,))) == 0
    assert err(k.ioctl, kvm, GET_EMU, cpuid_buf(2, pad_at=(1,))) == errno.EINVAL
    assert err(k.ioctl, kvm, GET_EMU, cpuid_buf(0, pad_at=(0,))) == errno.E2BIG
    assert err(k.ioctl, vm, GET_EMU, cpuid_buf(4)) == errno.ENOTTY
    with pytest.raises(TypeError):
        k.ioctl(kvm, GET_EMU, 1.5)


def test_emulated_cpuid_user_memory_faults(k):
    kvm, _ = create_vm(k)
    assert err(k.ioctl, kvm, GET_EMU, 0) == errno.EFAULT
    edge, unmap = guard_page()
    try:
        head = edge - 8 - ENTRY  # one entry readable, the second not
        ctypes.memmove(head, (1).to_bytes(4, "little") + bytes(4 + ENTRY), 8 + ENTRY)
        assert err(k.ioctl, kvm, GET_EMU, head) == errno.E2BIG  # padding fine, 1 < 4
        ctypes.memmove(head, (4).to_bytes(4, "little"), 4)
        assert err(k.ioctl, kvm, GET_EMU, head) == errno.EINVAL  # an unreadable padding
    finally:
        unmap()


def test_supported_cpuid_path_unchanged(k):
    """GET_SUPPORTED_CPUID shares _get_cpuid: exactly len(table) entries suffice."""
    kvm, _ = create_vm(k)
    n = len(k.profile.cpuid)
    assert err(k.ioctl, kvm, K.KVM_GET_SUPPORTED_CPUID, cpuid_buf(n - 1)) == errno.E2BIG
    buf = cpuid_buf(n, pad_at=(0,))  # no padding check for the supported table
    assert k.ioctl(kvm, K.KVM_GET_SUPPORTED_CPUID, buf) == 0
    assert int.from_bytes(buf[0:4], "little") == n


# --- K.KVM_RESET_DIRTY_RINGS -----------------------------------------------------------------------


def test_reset_dirty_rings_without_ring(k):
    kvm, vm = create_vm(k)
    assert err(k.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0) == errno.EINVAL
    assert err(k.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, bytearray(8)) == errno.EINVAL
    assert err(k.ioctl, kvm, K.KVM_RESET_DIRTY_RINGS, 0) == errno.EINVAL
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0) == errno.EINVAL
    assert err(k.ioctl, cpu, K.KVM_RESET_DIRTY_RINGS, 0) == errno.EINVAL
    k.file(vm).vm.kill("test")
    assert err(k.ioctl, vm, K.KVM_RESET_DIRTY_RINGS, 0) == errno.EIO


@pytest.mark.parametrize("cap", [192, 223])  # KVM_CAP_DIRTY_LOG_RING(_ACQ_REL)
def test_dirty_ring_enabled_then_reset(k, cap):
    """With a ring (kmock.kvm.dirty_ring, tests/kvm/test_dirty_ring.py) RESET_DIRTY_RINGS
    counts the entries reset: 0 with no vCPU (the 6.18.44 host agrees)."""
    _, vm = create_vm(k)
    c = K.kvm_enable_cap(cap=cap)
    c.args[0] = 4096
    assert k.ioctl(vm, K.KVM_ENABLE_CAP, c) == 0
    assert k.ioctl(vm, K.KVM_RESET_DIRTY_RINGS, 0) == 0
