"""Property tests: random interleavings of conversions, PUNCH_HOLE, fallocate, pins, mmaps
and host accesses, checked against an independent model of the reference's rules.

Configurations: gmem-attributes-v8 (4K folios, error_offset clamped to the request),
gmem-convert-rfc-v2 with 4K folios, and with 2M hugetlb folios starting shared (unsplit)
or private (error_offset = the refused folio's start, unclamped; split on to-shared,
merge on to-private, §1.5).

Invariants after every step:
- no host mapping can read a private page: kmock raises SigBus and the native address
  really faults (a short process_vm_readv);
- every shared page of a live mapping is readable natively and shows the bytes the model
  expects, the same through the mapping object;
- contents change only by host writes and PUNCH_HOLE (which zeroes), never by conversion;
- the attribute, pin and huge/split counts of snapshot() match the model.
On EAGAIN the snapshot, and the bytes of every page, are as before the call; a
to-private conversion over a pinned page always fails, at the offset the profile's
rule gives.
"""

import os

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (Bundle, RuleBasedStateMachine, consumes, invariant,
                                 rule)

import kmock
from kmock import _libc

from ._util import (HUGETLB, INIT_PRIVATE, INIT_SHARED, MMAP, M2, P, SUPPORT_SHARED, RfcV2,
                    V8, errno)

CONFIGS = {
    # name: (profile, env class, size, flags, folio pages, clamp, initially private)
    "v8": ("gmem-attributes-v8", V8, 16 * P, MMAP | INIT_SHARED, 1, True, False),
    "v8-init-private": ("gmem-attributes-v8", V8, 16 * P, MMAP, 1, True, True),
    "rfc-v2-4k": ("gmem-convert-rfc-v2", RfcV2, 16 * P, SUPPORT_SHARED, 1, False, False),
    "rfc-v2-2m": ("gmem-convert-rfc-v2", RfcV2, 2 * M2, SUPPORT_SHARED | HUGETLB, 512, False,
                  False),
    "rfc-v2-2m-private": ("gmem-convert-rfc-v2", RfcV2, 2 * M2,
                          SUPPORT_SHARED | HUGETLB | INIT_PRIVATE, 512, False, True),
}


def page_strategy(npages, fp):
    """Page indexes biased to folio edges (where split/merge and clamping matter)."""
    if fp == 1:
        return st.integers(0, npages)
    edges = sorted({x for f in range(0, npages + 1, fp) for x in (f - 1, f, f + 1)
                    if 0 <= x <= npages})
    return st.one_of(st.sampled_from(edges), st.integers(0, npages))


def machine_for(name):
    profile, cls, size, flags, fp, clamp, init_private = CONFIGS[name]
    npages = size // P
    pages = page_strategy(npages, fp)

    def prange():
        return st.tuples(pages, pages).map(sorted).filter(lambda r: r[0] < r[1])

    class ConversionMachine(RuleBasedStateMachine):
        mappings = Bundle("mappings")
        pins = Bundle("pins")

        def __init__(self):
            super().__init__()
            self.k = kmock.Kernel(profile=profile)
            self.env = cls(self.k, size=size, flags=flags)
            self.private = bytearray([1 if init_private else 0]) * npages
            self.fill = bytearray(npages)  # each page holds one repeated byte value
            self.pin_count = [0] * npages
            self.nfolios = npages // fp
            self.split = [False] * self.nfolios if fp > 1 else None
            self.live = []  # (mapping, first page, npages)
            self.held = {}  # id(pin handle) -> pages it still holds in the file
            self.pinned_at = {}  # id(pin handle) -> its first page

        def teardown(self):
            self.k.close_all()

        # --- the model's rules ------------------------------------------------------

        def blocking(self, a, b):
            """Page index whose folio refuses a to-private conversion of [a, b), or None."""
            if fp == 1:
                for p in range(a, b):
                    if self.pin_count[p]:
                        return p
                return None
            for f in range(a // fp, (b - 1) // fp + 1):
                lo, hi = f * fp, (f + 1) * fp
                if not self.split[f]:
                    if any(self.pin_count[lo:hi]):
                        return lo if not clamp else max(a, lo)
                else:
                    for p in range(max(a, lo), min(b, hi)):
                        if self.pin_count[p]:
                            return p
            return None

        def page_bytes(self, p):
            return bytes([self.fill[p]]) * P

        # --- rules ---------------------------------------------------------------------

        @rule(r=prange(), to_private=st.booleans())
        def convert(self, r, to_private):
            a, b = r
            env = self.env
            target = 1 if to_private else 0
            noop = all(self.private[p] == target for p in range(a, b))
            expect = None if noop or not to_private else self.blocking(a, b)
            before = self.k.snapshot()
            if cls is V8:
                res, arg = env.set_attrs(a * P, (b - a) * P, 8 if to_private else 0)
            else:
                res, arg = env.convert(to_private, a * P, (b - a) * P)
            if expect is not None:
                assert res == errno.EAGAIN, (a, b, expect)
                assert arg.error_offset == expect * P
                assert self.k.snapshot() == before
                return
            assert res == 0, (res, a, b, arg.error_offset)
            if noop:
                return
            self.private[a:b] = bytes([target]) * (b - a)
            if fp > 1:
                for f in range(a // fp, (b - 1) // fp + 1):
                    if not to_private:
                        self.split[f] = True
                    elif not any(self.private[p] == 0 for p in range(f * fp, (f + 1) * fp)):
                        self.split[f] = False

        @rule(entry=pins, delta=st.integers(-3, 3), length=st.integers(1, 3),
              to_private=st.booleans())
        def convert_near_pin(self, entry, delta, length, to_private):
            """Conversions right next to (or over) a pinned page, in the same folio."""
            if entry is None:
                return
            p0 = self.pinned_at[id(entry)]
            a = min(max(0, p0 + delta), npages - 1)
            self.convert((a, min(npages, a + length)), to_private)

        @rule(r=prange())
        def punch(self, r):
            a, b = r
            self.env.punch(a * P, (b - a) * P)
            self.fill[a:b] = bytes(b - a)
            for p in range(a, b):
                self.pin_count[p] = 0  # the pinned folios are orphaned (truncated)
            gone = set(range(a, b))
            for held in self.held.values():
                held -= gone

        @rule(r=prange())
        def allocate(self, r):
            a, b = r
            self.env.allocate(a * P, (b - a) * P)

        @rule(target=mappings, r=prange())
        def mmap(self, r):
            a, b = r
            m = self.env.mmap((b - a) * P, a * P)
            self.live.append((m, a, b - a))
            return (m, a, b - a)

        @rule(entry=consumes(mappings))
        def munmap(self, entry):
            entry[0].close()
            self.live.remove(entry)

        @rule(target=pins, entry=mappings, r=st.tuples(st.integers(0, 1 << 20),
                                                        st.integers(1, 4)))
        def pin(self, entry, r):
            m, first, n = entry
            if m.closed:
                return None
            off = r[0] % n
            cnt = min(r[1], n - off)
            pages_ = range(first + off, first + off + cnt)
            if any(self.private[p] for p in pages_):
                with pytest.raises(OSError) as e:
                    self.k.gup_pin(m, off * P, cnt * P)
                assert e.value.errno == errno.EFAULT
                return None
            handle = self.k.gup_pin(m, off * P, cnt * P)
            for p in pages_:
                self.pin_count[p] += 1
            self.held[id(handle)] = set(pages_)
            self.pinned_at[id(handle)] = pages_[0]
            return handle

        @rule(entry=consumes(pins))
        def unpin(self, entry):
            if entry is None:
                return
            entry.unpin()
            for p in self.held.pop(id(entry)):  # pages a punch orphaned since are gone
                self.pin_count[p] -= 1

        @rule(entry=mappings, r=st.tuples(st.integers(0, 1 << 20), st.integers(1, 3)),
              value=st.integers(1, 255))
        def host_write(self, entry, r, value):
            m, first, n = entry
            if m.closed:
                return
            off = r[0] % n
            cnt = min(r[1], n - off)
            fault = next((i for i in range(cnt) if self.private[first + off + i]), None)
            try:
                m[off * P:(off + cnt) * P] = bytes([value]) * (cnt * P)
                assert fault is None
            except kmock.SigBus as e:
                assert fault is not None and e.offset == (off + fault) * P
            done = cnt if fault is None else fault
            for i in range(done):
                self.fill[first + off + i] = value

        @rule(entry=mappings, r=st.tuples(st.integers(0, 1 << 20), st.integers(1, 3)))
        def host_read(self, entry, r):
            m, first, n = entry
            if m.closed:
                return
            off = r[0] % n
            cnt = min(r[1], n - off)
            fault = next((i for i in range(cnt) if self.private[first + off + i]), None)
            try:
                data = m[off * P:(off + cnt) * P]
                assert fault is None
                assert data == b"".join(self.page_bytes(first + off + i) for i in range(cnt))
            except kmock.SigBus as e:
                assert fault is not None and e.offset == (off + fault) * P

        # --- invariants ------------------------------------------------------------------

        @invariant()
        def mappings_match_model(self):
            for m, first, n in self.live:
                i = 0
                while i < n:  # runs of one kind
                    kind = self.private[first + i]
                    j = i
                    while j < n and self.private[first + j] == kind:
                        j += 1
                    if kind:
                        for q in range(i, j):  # every private page faults natively
                            assert _libc.read_user(m.address + q * P, 1)[1] == 0
                        assert _sigbus(m, i * P) == i * P
                    else:
                        data, got = _libc.read_user(m.address + i * P, (j - i) * P)
                        want = b"".join(self.page_bytes(first + q) for q in range(i, j))
                        assert got == (j - i) * P and data == want
                        assert m[i * P:j * P] == want
                    i = j

        @invariant()
        def snapshot_matches_model(self):
            s = self.env.gmem_snapshot()
            assert s["private_pages"] == sum(self.private)
            assert s["host_mappings"] == len(self.live)
            assert s["pinned_pages"] == sum(1 for c in self.pin_count if c)
            if fp > 1:
                assert s["split_folios"] == sum(self.split)
                assert s["huge_folios"] == self.nfolios - sum(self.split)

    ConversionMachine.__name__ = f"ConversionMachine_{name.replace('-', '_')}"
    return ConversionMachine


def _sigbus(m, off):
    try:
        m[off]
    except kmock.SigBus as e:
        return e.offset
    return None


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_conversion_state_machine(name):
    machine = machine_for(name)
    examples = 40 if os.environ.get("CI") else 25
    machine.TestCase.settings = settings(
        max_examples=examples, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    machine.TestCase().runTest()
