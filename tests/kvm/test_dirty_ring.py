"""The dirty ring (kmock.kvm.dirty_ring) on profile linux-6.18: KVM_ENABLE_CAP of the ring
caps, the ring's mmap on the vCPU fd, pushes of scripted guest writes, the soft-full exit
and KVM_RESET_DIRTY_RINGS. The host's answers are in the conformance scenarios
dirty_ring_enable, dirty_ring_mmap and dirty_ring_guest_write."""

import ctypes
import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmock
from kmock import _libc
from kmock.kvm import dirty_ring as DR
from kmock.uapi import kvm as K

from ._guest import RunView, UserMem

P = 4096
RW = _libc.PROT_READ | _libc.PROT_WRITE
GPA = 1 << 30
RING = K.KVM_CAP_DIRTY_LOG_RING
ACQ_REL = K.KVM_CAP_DIRTY_LOG_RING_ACQ_REL
FULL = K.KVM_EXIT_DIRTY_RING_FULL
DIRTY, RESET = K.KVM_DIRTY_GFN_F_DIRTY, K.KVM_DIRTY_GFN_F_RESET


def err(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def enable(k, vm, size, cap=RING, flags=0):
    c = K.kvm_enable_cap(cap=cap, flags=flags)
    c.args[0] = size
    return k.ioctl(vm, K.KVM_ENABLE_CAP, c)


class RingVM:
    """A VM with a ring of ``size`` bytes, ``nr_vcpus`` vCPUs with their ring mapped, and
    a dirty-logged memslot 0 of ``pages`` pages at GPA."""

    def __init__(self, k, size=P, nr_vcpus=1, pages=512, log=True):
        self.k = k
        kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.fd = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_DEFAULT_VM)
        self.vm = k.vm(self.fd)
        assert enable(k, self.fd, size) == 0
        self.mem = UserMem(pages * P)
        k.ioctl(self.fd, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
            slot=0, flags=K.KVM_MEM_LOG_DIRTY_PAGES if log else 0, guest_phys_addr=GPA,
            memory_size=pages * P, userspace_addr=self.mem.addr))
        self.cpus = [k.ioctl(self.fd, K.KVM_CREATE_VCPU, i) for i in range(nr_vcpus)]
        self.views = [RunView(k, c) for c in self.cpus]
        self.rings = [k.mmap(c, size, RW, _libc.MAP_SHARED, K.KVM_DIRTY_LOG_PAGE_OFFSET * P)
                      for c in self.cpus]
        self.size = size // 16

    def entry(self, i, cpu=0):
        b = self.rings[cpu][16 * i:16 * i + 16]
        return (int.from_bytes(b[:4], "little"), int.from_bytes(b[4:8], "little"),
                int.from_bytes(b[8:], "little"))

    def harvest(self, i, cpu=0):
        self.rings[cpu][16 * i:16 * i + 4] = RESET.to_bytes(4, "little")

    def run(self, cpu=0):
        r = self.k.ioctl(self.cpus[cpu], K.KVM_RUN, 0)
        return r, self.views[cpu].exit_reason

    def reset(self):
        return self.k.ioctl(self.fd, K.KVM_RESET_DIRTY_RINGS, 0)

    def guest(self, cpu=0):
        return self.vm.vcpus[cpu].guest


@pytest.fixture
def vm_fd(k):
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    return k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_DEFAULT_VM)


def test_caps_advertised(k, vm_fd):
    for cap in (RING, ACQ_REL):
        assert k.ioctl(vm_fd, K.KVM_CHECK_EXTENSION, cap) == 65536 * 16
    assert k.ioctl(vm_fd, K.KVM_CHECK_EXTENSION, K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP) == 0


@pytest.mark.parametrize("size,want", [
    (0, errno.EINVAL), (16, errno.EINVAL), (1024, errno.EINVAL), (4095, errno.EINVAL),
    (4096 + 16, errno.EINVAL), (3 * P, errno.EINVAL), (1 << 21, errno.E2BIG),
    (1 << 31, errno.E2BIG), (1 << 32, errno.EINVAL), ((1 << 32) | P, 0), (P, 0), (1 << 20, 0)])
def test_enable_sizes(k, vm_fd, size, want):
    if want:
        assert err(enable, k, vm_fd, size) == want
        assert k.vm(vm_fd).dirty_ring_size == 0
    else:
        assert enable(k, vm_fd, size) == 0
        assert k.vm(vm_fd).dirty_ring_size == size & 0xFFFFFFFF


def test_enable_once_either_cap_flags_ignored(k, vm_fd):
    assert enable(k, vm_fd, 2 * P, ACQ_REL, flags=1) == 0
    for cap, size in ((ACQ_REL, 2 * P), (RING, 2 * P), (RING, P), (RING, 0)):
        assert err(enable, k, vm_fd, size, cap) == errno.EINVAL
    assert err(enable, k, vm_fd, 0, K.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP) == errno.EINVAL
    assert k.vm(vm_fd).dirty_ring_size == 2 * P


def test_enable_after_a_vcpu(k, vm_fd):
    k.ioctl(vm_fd, K.KVM_CREATE_VCPU, 0)
    assert err(enable, k, vm_fd, P) == errno.EINVAL
    assert err(k.ioctl, vm_fd, K.KVM_RESET_DIRTY_RINGS, 0) == errno.EINVAL


def test_reserved_entries_set_the_smallest_ring(k, vm_fd, monkeypatch):
    # a VMX host with PML: 64 + 512 reserved entries, 16384 bytes the smallest ring
    monkeypatch.setattr(DR, "rsvd_entries", lambda vm: 64 + 512)
    assert err(enable, k, vm_fd, 8192) == errno.EINVAL
    assert enable(k, vm_fd, 16384) == 0
    cpu = k.vm(vm_fd).vcpus[k.ioctl(vm_fd, K.KVM_CREATE_VCPU, 0) and 0]
    assert (cpu.dirty_ring.size, cpu.dirty_ring.soft_limit) == (1024, 1024 - 576)


def test_bitmap_ioctls_are_enxio_with_a_ring(k):
    r = RingVM(k)
    buf = ctypes.create_string_buffer(64)
    for slot in (0, 0x7FFF):
        assert err(k.ioctl, r.fd, K.KVM_GET_DIRTY_LOG,
                   K.kvm_dirty_log(slot=slot, dirty_bitmap=ctypes.addressof(buf))) == errno.ENXIO
    assert err(k.ioctl, r.fd, K.KVM_CLEAR_DIRTY_LOG, K.kvm_clear_dirty_log(
        slot=0, num_pages=64, dirty_bitmap=ctypes.addressof(buf))) == errno.ENXIO


def test_mmap_checks(k):
    r = RingVM(k, size=2 * P)
    cpu = r.cpus[0]
    at = 64 * P
    for length, prot, flags, off, want in (
            (2 * P, RW, _libc.MAP_PRIVATE, at, errno.EINVAL),
            (P, _libc.PROT_READ, _libc.MAP_PRIVATE, at + P, errno.EINVAL),
            (2 * P, _libc.PROT_READ, _libc.MAP_PRIVATE, at - P, errno.EINVAL),
            (2 * P, RW | _libc.PROT_EXEC, _libc.MAP_SHARED, at, errno.EPERM),
            (P, RW | _libc.PROT_EXEC, _libc.MAP_SHARED, 0, errno.EPERM)):
        assert err(k.mmap, cpu, length, prot, flags, off) == want
    k.mmap(cpu, P, _libc.PROT_READ, _libc.MAP_PRIVATE, at + 2 * P).close()  # past the ring
    whole = k.mmap(cpu, at + 3 * P, _libc.PROT_READ, _libc.MAP_PRIVATE, 0)  # spans it
    assert whole[at:at + 2 * P] == bytes(2 * P)
    with pytest.raises(kmock.SigBus):
        whole[3 * P]  # between kvm_run's pages and the ring
    with pytest.raises(kmock.SigBus):
        whole[at + 2 * P]  # past the ring
    whole.close()


def test_mmap_without_a_ring_is_unchecked(k, vm_fd):
    cpu = k.ioctl(vm_fd, K.KVM_CREATE_VCPU, 0)
    m = k.mmap(cpu, P, _libc.PROT_READ, _libc.MAP_PRIVATE, 64 * P)
    with pytest.raises(kmock.SigBus):
        m[0]
    m.close()


def test_guest_writes_push_once_until_reset(k):
    r = RingVM(k)
    g = r.guest()
    g.write(GPA + 5 * P, b"x" * (2 * P))      # pages 5, 6
    g.write(GPA + 5 * P + 8, b"y")            # page 5 again: writable, no push
    g.read(GPA + 9 * P, 8)                    # a read pushes nothing
    g.hlt()
    assert r.run() == (0, K.KVM_EXIT_HLT)
    assert [r.entry(i) for i in range(3)] == [(DIRTY, 0, 5), (DIRTY, 0, 6), (0, 0, 0)]
    assert r.reset() == 0                      # nothing harvested
    r.harvest(1)                               # entry 1 without entry 0: stops at 0
    assert r.reset() == 0
    r.harvest(0)
    assert r.reset() == 2
    assert [r.entry(i) for i in range(2)] == [(0, 0, 5), (0, 0, 6)]
    g.write(GPA + 6 * P, b"z")                 # re-protected by the reset: pushed again
    g.hlt()
    r.run()
    assert r.entry(2) == (DIRTY, 0, 6)


def test_slot_logged_before_the_ring_with_initially_set(k, vm_fd):
    c = K.kvm_enable_cap(cap=K.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2)
    c.args[0] = 3  # MANUAL_PROTECT_ENABLE | INITIALLY_SET: the slot's bitmap starts full
    k.ioctl(vm_fd, K.KVM_ENABLE_CAP, c)
    mem = UserMem(16 * P)
    k.ioctl(vm_fd, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
        slot=2, flags=K.KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr=GPA, memory_size=16 * P,
        userspace_addr=mem.addr))
    assert enable(k, vm_fd, P) == 0
    cpu = k.ioctl(vm_fd, K.KVM_CREATE_VCPU, 0)
    ring = k.mmap(cpu, P, RW, _libc.MAP_SHARED, 64 * P)
    g = k.vm(vm_fd).vcpus[0].guest
    g.write(GPA + 3 * P, b"x")
    g.hlt()
    k.ioctl(cpu, K.KVM_RUN, 0)
    assert ring[0:16] == (DIRTY | 2 << 32 | 3 << 64).to_bytes(16, "little")


def test_unlogged_slot_pushes_nothing(k):
    r = RingVM(k, log=False)
    r.guest().write(GPA, b"x")
    r.guest().hlt()
    r.run()
    assert r.entry(0) == (0, 0, 0)


def test_soft_full_exit(k):
    r = RingVM(k)  # 256 entries, soft limit 192
    assert r.vm.vcpus[0].dirty_ring.soft_limit == 192
    g = r.guest()
    ws = [g.write(GPA + i * P, b"w") for i in range(200)]
    g.hlt()
    assert r.run() == (0, FULL)
    assert ws[190].done and not ws[191].done  # the 192nd push exits before it retires
    assert r.entry(191) == (DIRTY, 0, 191)
    assert r.run() == (0, FULL)               # still soft-full: the guest does not run
    assert not ws[192].done
    for i in range(100):
        r.harvest(i)
    assert r.reset() == 100
    assert r.run() == (0, K.KVM_EXIT_HLT)     # below the limit: the guest runs on
    assert all(w.done for w in ws)
    # page 191 stays writable (its entry was not reset): the retried write pushes nothing
    assert r.vm.vcpus[0].dirty_ring.used() == 100
    assert r.entry(192) == (DIRTY, 0, 192) and r.entry(199) == (DIRTY, 0, 199)


def test_multi_page_write_exits_at_the_soft_limit(k):
    r = RingVM(k)
    g = r.guest()
    for i in range(150):
        g.write(GPA + i * P, b"s")
    w = g.write(GPA + 200 * P, b"m" * (100 * P))  # pages 200..299
    g.hlt()
    assert r.run() == (0, FULL) and not w.done
    ring = r.vm.vcpus[0].dirty_ring
    assert ring.used() == 192 and r.entry(191) == (DIRTY, 0, 241)
    for i in range(192):
        r.harvest(i)
    assert r.reset() == 192
    assert r.run() == (0, K.KVM_EXIT_HLT) and w.done  # retried whole: 100 pages pushed
    assert ring.used() == 100 and r.entry(192) == (DIRTY, 0, 200)


def test_one_access_beyond_the_soft_limit_is_a_usage_error(k):
    r = RingVM(k)
    r.guest().write(GPA, b"m" * (192 * P))
    with pytest.raises(kmock.errors.KmockUsageError, match="soft limit"):
        r.run()


def test_reset_walks_every_vcpu(k):
    r = RingVM(k, nr_vcpus=2)
    r.guest(0).write(GPA, b"a")
    r.guest(1).write(GPA + P, b"b")
    r.guest(1).write(GPA + 2 * P, b"c")
    for c in (0, 1):
        r.guest(c).hlt()
        r.run(c)
    assert r.entry(0, 0) == (DIRTY, 0, 0)
    assert [r.entry(i, 1) for i in (0, 1)] == [(DIRTY, 0, 1), (DIRTY, 0, 2)]
    r.harvest(0, 0)
    r.harvest(0, 1)
    r.harvest(1, 1)
    assert r.reset() == 3


def test_reset_after_the_slot_went(k):
    r = RingVM(k)
    r.guest().write(GPA, b"a")
    r.guest().hlt()
    r.run()
    k.ioctl(r.fd, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
        slot=0, flags=K.KVM_MEM_LOG_DIRTY_PAGES, guest_phys_addr=GPA, memory_size=0))
    r.harvest(0)
    assert r.reset() == 1  # kvm_reset_dirty_gfn skips a slot that is gone


# --- a model of push / harvest / reset / the soft-full exit --------------------------------


class Model:
    def __init__(self, size, soft):
        self.size, self.soft = size, soft
        self.ring = [(0, 0, 0)] * size
        self.dirty = self.reset_idx = 0
        self.writable = set()
        self.request = False
        self.queue = []

    def used(self):
        return self.dirty - self.reset_idx

    def run(self):
        if self.request:
            if self.used() >= self.soft:
                return FULL
            self.request = False
        while self.queue:
            page = self.queue[0]
            if page not in self.writable:
                self.ring[self.dirty % self.size] = (DIRTY, 0, page)
                self.dirty += 1
                self.writable.add(page)
                if self.used() >= self.soft:
                    self.request = True
                    return FULL
            self.queue.pop(0)
        return K.KVM_EXIT_HLT

    def harvest(self, n):
        """The VMM marks the next n pushed, unharvested entries F_RESET."""
        i = self.reset_idx
        while n and i < self.dirty:
            f, s, o = self.ring[i % self.size]
            if not f & RESET:
                self.ring[i % self.size] = (RESET, s, o)
                n -= 1
            i += 1

    def reset(self):
        count = 0
        while self.ring[self.reset_idx % self.size][0] & RESET:
            _f, s, o = self.ring[self.reset_idx % self.size]
            self.ring[self.reset_idx % self.size] = (0, s, o)
            self.writable.discard(o)
            self.reset_idx += 1
            count += 1
        return count


OPS = st.lists(st.one_of(
    st.tuples(st.just("write"), st.lists(st.integers(0, 299), min_size=1, max_size=40)),
    st.tuples(st.just("harvest"), st.integers(1, 200)),
    st.tuples(st.just("reset"), st.just(0)),
    st.tuples(st.just("run"), st.just(0))), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_ring_against_model(ops):
    with kmock.Kernel(profile="linux-6.18") as k:
        r = RingVM(k, pages=300)
        ring = r.vm.vcpus[0].dirty_ring
        m = Model(ring.size, ring.soft_limit)
        g = r.guest()
        for op, arg in ops:
            if op == "write":
                for page in arg:
                    g.write(GPA + page * P, b"\1")
                m.queue.extend(arg)
            elif op == "harvest":
                m.harvest(arg)
                for i, (f, _s, _o) in enumerate(m.ring):
                    if f == RESET and r.entry(i)[0] != RESET:
                        r.harvest(i)
            elif op == "reset":
                assert r.reset() == m.reset()
            else:
                assert r.run() == (0, m.run())
            assert [r.entry(i) for i in range(ring.size)] == m.ring
            assert ring.used() == m.used()
