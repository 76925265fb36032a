"""private_mem_conversions_test (ST-PMC, reference §6.4), driven by scripted guests.

The guest converts memory with KVM_HC_MAP_GPA_RANGE at 4K and 2M granularity; the host
turns each KVM_EXIT_HYPERCALL into fallocate on the guest_memfd (PUNCH_HOLE for
to-shared, allocate for to-private) and KVM_SET_MEMORY_ATTRIBUTES, writes ret = 0 and
re-runs. Guest "ucalls" are OUT to port 0xE7; at each the host checks that it sees the
shared data through the slots' userspace memory (private writes are invisible to it)
and, for SYNC_SHARED, writes the next pattern there.

The selftest passes its own flag bits in a2 (KVM does not validate it). Here a2 is a
real KVM_MAP_GPA_RANGE attribute word (ENCRYPTED = to private, PAGE_SZ_2M for ranges of
2M and more) plus two test bits above them, as the selftest's MAP_GPA_* bits:
T_DO_FALLOCATE (1 << 8) and T_NO_SET_ATTRIBUTES (1 << 9, guest_punch_hole).
"""

import collections
import ctypes

import pytest

from kmock import _libc
from kmock.uapi import kvm as K

from ._guest import M2, PRIVATE, GuestVM, P, UserMem

BASE = 1 << 32  # BASE_DATA_GPA
PER_CPU = M2 + P  # PER_CPU_DATA_SIZE
NR_VCPUS = 2
NR_MEMSLOTS = 3  # so that one vCPU's data straddles memslots
SYNC_PORT = 0xE7
T_DO_FALLOCATE = 1 << 8
T_NO_SET_ATTRIBUTES = 1 << 9
TEST_RANGES = [(0, P), (0, M2), (P, P), (P, M2), (M2, P)]


class GuestProgram:
    """Builds one vCPU's script the way guest_code() runs; records what it checks."""

    def __init__(self, script, base):
        self.g = script
        self.base = base
        self.syncs = collections.deque()
        self.checks = []  # (action, expected result, what)

    def memset(self, gpa, byte, size):
        self.g.write(gpa, bytes([byte]) * size)

    def memcmp(self, gpa, byte, size, what):
        self.checks.append((self.g.read(gpa, size), bytes([byte]) * size, what))

    def map_mem(self, gpa, size, shared, do_fallocate, set_attributes=True):
        attrs = K.KVM_MAP_GPA_RANGE_PAGE_SZ_2M if size >= M2 else K.KVM_MAP_GPA_RANGE_PAGE_SZ_4K
        if not shared:
            attrs |= K.KVM_MAP_GPA_RANGE_ENCRYPTED
        if do_fallocate:
            attrs |= T_DO_FALLOCATE
        if not set_attributes:
            attrs |= T_NO_SET_ATTRIBUTES
        a = self.g.map_gpa_range(gpa, size // P, not shared, attrs=attrs)
        self.checks.append((a, 0, f"map_gpa_range({gpa:#x}, {size:#x}) ret"))

    def sync_shared(self, gpa, size, cur, new):
        self.syncs.append(("shared", gpa, size, cur, new))
        self.g.outb(SYNC_PORT, 0)

    def sync_private(self, gpa, size, pattern):
        self.syncs.append(("private", gpa, size, pattern, None))
        self.g.outb(SYNC_PORT, 0)

    # --- guest_code ------------------------------------------------------------------------

    def explicit_conversion(self, do_fallocate):
        base = self.base
        def_p, init_p = 0xAA, 0xCC
        self.memset(base, def_p, PER_CPU)  # memory is shared by default
        self.memcmp(base, def_p, PER_CPU, "default pattern")
        self.sync_shared(base, PER_CPU, def_p, init_p)
        self.memcmp(base, init_p, PER_CPU, "host wrote init pattern")
        for off, size in TEST_RANGES:
            gpa = base + off
            p1, p2, p3, p4 = 0x11, 0x22, 0x33, 0x44
            self.memset(gpa, p1, size)
            self.map_mem(gpa, size, shared=False, do_fallocate=do_fallocate)
            if size > P:
                self.memset(gpa, p2, P)
            else:
                self.memset(gpa, p2, size)
                self.sync_private(gpa, size, p1)  # the host still sees p1
                self.memcmp(gpa, p2, size, "private data")
                if gpa > base:
                    self.memcmp(base, init_p, gpa - base, "shared data before")
                if gpa + size < base + PER_CPU:
                    self.memcmp(gpa + size, init_p, base + PER_CPU - (gpa + size),
                                "shared data after")
                for j in range(0, size, P):
                    if (j // P) & 1:
                        self.map_mem(gpa + j, P, shared=True, do_fallocate=do_fallocate)
                        self.sync_shared(gpa + j, P, p1, p3)
                        self.memcmp(gpa + j, p3, P, "odd page shared again")
                    else:
                        self.sync_private(gpa + j, P, p1)
            # skip:
            self.map_mem(gpa, size, shared=True, do_fallocate=do_fallocate)
            self.memset(gpa, p3, size)
            self.sync_shared(gpa, size, p3, p4)
            self.memcmp(gpa, p4, size, "host wrote p4")
            self.memset(gpa, init_p, size)
            self.map_mem(base, PER_CPU, shared=True, do_fallocate=True)

    def punch_hole_test(self, precise):
        base = self.base
        init_p = 0xCC
        self.map_mem(base, PER_CPU, shared=False, do_fallocate=False)
        for off, size in TEST_RANGES:
            gpa = base + off
            self.punch(base, PER_CPU)
            if precise:
                self.memset(gpa, init_p, size)
                self.memcmp(gpa, init_p, size, "faulted back in")
            else:
                self.memset(base, init_p, PER_CPU)
                self.memcmp(base, init_p, PER_CPU, "faulted back in")
            self.punch(gpa, size)
            self.memcmp(gpa, 0, size, "punched private memory reads zero")

    def punch(self, gpa, size):
        """guest_punch_hole: fallocate only, no attribute change."""
        self.map_mem(gpa, size, shared=True, do_fallocate=True, set_attributes=False)

    def guest_code(self):
        self.explicit_conversion(False)
        self.explicit_conversion(True)
        self.punch_hole_test(False)
        self.punch_hole_test(True)
        self.g.hlt()  # GUEST_DONE


def handle_exit_hypercall(gvm, view):
    hc = view.hypercall()
    assert hc["nr"] == K.KVM_HC_MAP_GPA_RANGE
    gpa, npages, attrs = hc["args"][:3]
    size = npages * P
    shared = not attrs & K.KVM_MAP_GPA_RANGE_ENCRYPTED
    if attrs & T_DO_FALLOCATE:
        gvm.gmem_fallocate(gpa, size, punch=shared)
    if not attrs & T_NO_SET_ATTRIBUTES:
        gvm.set_attrs(gpa, size, 0 if shared else PRIVATE)
    view.set_u64(88, 0)  # run->hypercall.ret


def handle_sync(gvm, prog):
    kind, gpa, size, pattern, new = prog.syncs.popleft()
    for i in range(0, size, P):  # memcmp_h page by page, as the selftest
        n = min(P, size - i)
        seen = gvm.host_read(gpa + i, n)
        assert seen == bytes([pattern]) * n, (
            f"host sees {seen[:8].hex()}.. at {gpa + i:#x}, expected {pattern:#x} ({kind})")
    if kind == "shared":  # the slots' userspace memory is one contiguous mapping
        s = gvm.slot_of(gpa)
        ctypes.memset(s["hva"] + gpa - s["gpa"], new, size)


@pytest.fixture
def pmc(k):
    gvm = GuestVM(k, K.KVM_X86_SW_PROTECTED_VM, nr_vcpus=NR_VCPUS)
    gvm.enable_map_gpa_range_exit()
    memfd_size = PER_CPU * NR_VCPUS
    slot_size = memfd_size // NR_MEMSLOTS
    assert slot_size % P == 0
    gmem = gvm.gmem(memfd_size)
    shared = UserMem(memfd_size)  # the slots' userspace memory, contiguous
    gvm.mems.append(shared)
    for i in range(NR_MEMSLOTS):
        gvm.add_slot(10 + i, BASE + slot_size * i, slot_size, gmem=gmem, offset=slot_size * i,
                     hva=shared.addr + slot_size * i)
    return gvm, gmem, memfd_size


def test_private_mem_conversions(pmc):
    gvm, gmem, memfd_size = pmc
    progs = []
    for i in range(NR_VCPUS):
        prog = GuestProgram(gvm.guest(i), BASE + i * PER_CPU)
        prog.guest_code()
        progs.append(prog)
    done = [False] * NR_VCPUS
    exits = collections.Counter()
    while not all(done):
        for i in range(NR_VCPUS):  # round-robin: the vCPUs' conversions interleave
            if done[i]:
                continue
            rc, reason = gvm.run(i)
            exits[reason] += 1
            assert rc == 0, f"vCPU {i}: KVM_RUN errno {rc}, exit {reason}, " \
                            f"{gvm.views[i].memory_fault()}"
            if reason == K.KVM_EXIT_HYPERCALL:
                handle_exit_hypercall(gvm, gvm.views[i])
            elif reason == K.KVM_EXIT_IO:
                assert gvm.views[i].io()["port"] == SYNC_PORT
                handle_sync(gvm, progs[i])
            else:
                assert reason == K.KVM_EXIT_HLT
                done[i] = True
            assert gvm.audit() == []
    for prog in progs:
        assert not prog.syncs
        for action, expected, what in prog.checks:
            assert action.done, what
            if action.result != expected:
                bad = next(i for i, (x, y) in enumerate(zip(action.result, expected)) if x != y) \
                    if isinstance(expected, bytes) else 0
                raise AssertionError(f"{action}: {what}: first difference at byte {bad}")
    assert exits[K.KVM_EXIT_HYPERCALL] > 100 and exits[K.KVM_EXIT_IO] > 20
    inode = gvm.k.file(gmem).inode

    # kvm_vm_free: delete the memslots, close the vCPUs and the VM; the guest_memfd stays
    for slot in list(gvm.slots):
        gvm.delete_slot(slot)
    gvm.close()
    assert inode.backing >= 0
    gvm.k.fallocate(gmem, _libc.FALLOC_FL_KEEP_SIZE | _libc.FALLOC_FL_PUNCH_HOLE, 0, memfd_size)
    gvm.k.fallocate(gmem, _libc.FALLOC_FL_KEEP_SIZE, 0, memfd_size)
    gvm.k.close(gmem)
