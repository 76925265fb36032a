"""Property test: random guest accesses interleaved with attribute changes, PUNCH_HOLE,
memslot delete/re-add and pre-faults; a VMM loop that converts on memory faults.

After every step stage-2 must be coherent with the VM (Stage2.audit): no entry of the
wrong kind, none outside a memslot, none on an unallocated guest_memfd page, frames
where the memslot says. Guest reads must return what a byte-level model predicts.
"""

import errno

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmock
from kmock import _libc
from kmock.uapi import kvm as K

from ._guest import PRIVATE, GuestVM, P

BASE = 1 << 20  # gfn of 4G
# slot id -> (first gfn offset, npages, which gmem (None, "g1", "g2"), gmem page offset)
SLOTS = {1: (0, 16, "g1", 0), 2: (16, 8, None, 0), 3: (28, 4, "g2", 0)}
SPAN = 32  # gfns 24-27 have no memslot: MMIO
PUNCH = _libc.FALLOC_FL_PUNCH_HOLE | _libc.FALLOC_FL_KEEP_SIZE

page = st.integers(0, SPAN - 1)
offset = st.sampled_from([0, 8, P - 16, P - 3])
size = st.sampled_from([1, 8, 13, 64, P, P + 5])
kind = st.sampled_from([None, True, False])
ops = st.one_of(
    st.tuples(st.just("read"), page, offset, size, kind),
    st.tuples(st.just("write"), page, offset, size, kind),
    st.tuples(st.just("attrs"), page, st.integers(1, 8), st.booleans()),
    st.tuples(st.just("punch"), st.sampled_from(["g1", "g2"]), st.integers(0, 15),
              st.integers(1, 6)),
    st.tuples(st.just("slot"), st.sampled_from(sorted(SLOTS))),
    st.tuples(st.just("pre_fault"), page, st.integers(1, 8)),
)


class World:
    def __init__(self, k):
        self.g = GuestVM(k, K.KVM_X86_SW_PROTECTED_VM)
        self.g.enable_map_gpa_range_exit()
        self.gmem = {"g1": self.g.gmem(16 * P), "g2": self.g.gmem(4 * P, K.GUEST_MEMFD_FLAG_MMAP)}
        # byte models of every backing store
        self.model = {"g1": bytearray(16 * P), "g2": bytearray(4 * P)}
        self.user = {}
        self.present = set()
        for sid in SLOTS:
            self.add(sid)
        self.serial = 0

    def add(self, sid):
        off, n, gm, goff = SLOTS[sid]
        s = self.g.slots.get(sid)
        hva = None if sid not in self.user else self.user[sid][0].addr
        um = self.g.add_slot(sid, (BASE + off) * P, n * P,
                             gmem=self.gmem[gm] if gm else None, offset=goff * P, hva=hva)
        if sid not in self.user:
            self.user[sid] = (um, bytearray(n * P))
        assert s is None
        self.present.add(sid)

    def store_of(self, gfn, private):
        """(model bytearray, byte offset of the page) serving gfn for this access kind."""
        for sid in self.present:
            off, n, gm, goff = SLOTS[sid]
            if off <= gfn - BASE < off + n:
                i = gfn - BASE - off
                if private or (gm == "g2"):
                    return self.model[gm], (goff + i) * P
                return self.user[sid][1], i * P
        return None, 0  # MMIO: writes vanish, reads see the zeros the VMM answers with

    def expected(self, gpa, size, private_req):
        out = bytearray()
        while size:
            gfn = gpa >> 12
            n = min(size, P - (gpa & (P - 1)))
            priv = self.g.vm.gfn_is_private(gfn) if private_req is None else private_req
            store, off = self.store_of(gfn, priv)
            out += bytes(n) if store is None else store[off + (gpa & (P - 1)):][:n]
            gpa += n
            size -= n
        return bytes(out)

    def apply_write(self, gpa, data, private_req):
        i = 0
        while i < len(data):
            gfn = (gpa + i) >> 12
            n = min(len(data) - i, P - ((gpa + i) & (P - 1)))
            priv = self.g.vm.gfn_is_private(gfn) if private_req is None else private_req
            store, off = self.store_of(gfn, priv)
            if store is not None:
                o = off + ((gpa + i) & (P - 1))
                store[o:o + n] = data[i:i + n]
            i += n

    def check(self):
        problems = self.g.audit()
        assert problems == [], problems

    def run_until_halt(self):
        """The VMM loop: convert on memory faults, answer MMIO with zeros, give up on
        faults a conversion cannot fix (private access without guest_memfd)."""
        g, view = self.g, self.g.views[0]
        last = None
        for _ in range(2000):
            rc, reason = g.run()
            if reason == K.KVM_EXIT_MMIO:  # up to 8 bytes per exit
                assert rc == 0
                view.set_u64(40, 0)
                continue
            self.check()
            if reason == K.KVM_EXIT_HLT:
                return True
            assert reason == K.KVM_EXIT_MEMORY_FAULT and rc in (errno.EFAULT,), (rc, reason)
            mf = view.memory_fault()
            assert mf["size"] == P and mf["gpa"] % P == 0
            private = bool(mf["flags"] & K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
            if (mf["gpa"], private) == last or \
                    private == g.vm.gfn_is_private(mf["gpa"] >> 12):
                g.guest().clear()  # not fixable by converting (no memslot / no gmem)
                return False
            last = (mf["gpa"], private)
            g.set_attrs(mf["gpa"], P, PRIVATE if private else 0)  # kvm_convert_memory
            self.check()
        raise AssertionError("VMM loop did not converge")

    def step(self, op):
        g = self.g
        kind = op[0]
        if kind in ("read", "write"):
            _, pg, off, size, private = op
            gpa = (BASE + pg) * P + off
            size = min(size, (BASE + SPAN) * P - gpa)
            if kind == "read":
                a = g.guest().read(gpa, size, private)
            else:
                self.serial += 1
                data = bytes([(self.serial + i) & 0xFF or 1 for i in range(size)])
                a = g.guest().write(gpa, data, private)
            if self.run_until_halt():
                assert a.done
                if kind == "read":
                    assert a.result == self.expected(gpa, size, private)
                else:
                    self.apply_write(gpa, data, private)
            else:
                assert not a.done
        elif kind == "attrs":
            _, pg, n, private = op
            g.set_attrs((BASE + pg) * P, n * P, PRIVATE if private else 0)
        elif kind == "punch":
            _, gm, start, n = op
            g.k.fallocate(self.gmem[gm], PUNCH, start * P, n * P)
            m = self.model[gm]
            lo, hi = start * P, min(len(m), (start + n) * P)
            if lo < hi:
                m[lo:hi] = bytes(hi - lo)
        elif kind == "slot":
            sid = op[1]
            if sid in self.present:
                g.delete_slot(sid)
                self.present.discard(sid)
            else:
                self.add(sid)
        elif kind == "pre_fault":
            _, pg, n = op
            r = K.kvm_pre_fault_memory(gpa=(BASE + pg) * P, size=min(n, SPAN - pg) * P)
            try:
                g.k.ioctl(g.vcpu_fds[0], K.KVM_PRE_FAULT_MEMORY, r)
            except OSError as e:
                assert e.errno in (errno.ENOENT, errno.EFAULT)
        self.check()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=25))
def test_random_interleavings_keep_stage2_coherent(steps):
    with kmock.Kernel(profile="linux-6.18") as k:
        w = World(k)
        for op in steps:
            w.step(op)
        # finally every byte the guest can see still matches the model
        for sid in sorted(w.present):
            off, n, gm, goff = SLOTS[sid]
            a = w.g.guest().read((BASE + off) * P, n * P)
            if w.run_until_halt():
                assert a.result == w.expected((BASE + off) * P, n * P, None)
        w.g.close()
