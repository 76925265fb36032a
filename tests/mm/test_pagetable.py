"""PageTable: unit tests and a stateful comparison with a dict page -> (pfn, perm)."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from _mm_impls import IMPLS, load_impl

K4, M2, G1 = 4096, 2 << 20, 1 << 30


class TestPageTableUnit:
    def test_largest_leaves(self, impl):
        pt = impl.PageTable()
        assert pt.levels == (K4, M2, G1)
        # 1 GiB + 2 MiB + 4 KiB at a 1G-aligned iova/pfn: one of each leaf size
        n = (G1 + M2 + K4) // K4
        pt.map(G1, G1 // K4, n, 3)
        assert pt.counts() == {K4: 1, M2: 1, G1: 1}
        assert pt.mapped_pages() == n
        assert pt.lookup(G1 + 5) == (G1 // K4, 3, G1)
        assert pt.lookup(2 * G1 + K4) == (2 * G1 // K4 + 1 + 0, 3, M2)
        assert pt.lookup(0) is None
        assert pt.runs() == [(G1, G1 // K4, n, 3)]

    def test_pfn_alignment_limits_leaves(self, impl):
        pt = impl.PageTable()
        pt.map(0, 1, 1024, 1)  # pfn not 2M-aligned: only 4K leaves
        assert pt.counts() == {K4: 1024, M2: 0, G1: 0}
        pt2 = impl.PageTable()
        pt2.map(K4 * 511, 511 + 512 * 7, 1 + 512 + 3, 1)
        assert pt2.counts() == {K4: 4, M2: 1, G1: 0}

    def test_forced_leaf(self, impl):
        pt = impl.PageTable()
        pt.map(0, 0, 2 * 262144, 7, leaf_size=M2)
        assert pt.counts() == {K4: 0, M2: 1024, G1: 0}
        with pytest.raises(ValueError):
            pt.map(G1 * 4 + K4, 0, 512, 7, leaf_size=M2)
        with pytest.raises(ValueError):
            pt.map(G1 * 4, 0, 512, 7, leaf_size=12345)

    def test_overlap_raises(self, impl):
        pt = impl.PageTable()
        pt.map(0, 0, 10, 1)
        with pytest.raises(ValueError, match="already mapped"):
            pt.map(9 * K4, 100, 2, 1)
        assert pt.mapped_pages() == 10

    def test_partial_unmap_splits(self, impl):
        pt = impl.PageTable()
        pt.map(0, 0, 262144, 3)
        assert pt.counts() == {K4: 0, M2: 0, G1: 1}
        removed = pt.unmap(M2 + 5 * K4, 1)
        assert removed == [(M2 + 5 * K4, 512 + 5, 1, 3)]
        assert pt.counts() == {K4: 511, M2: 511, G1: 0}
        assert pt.lookup(M2 + 5 * K4) is None
        assert pt.lookup(M2 + 6 * K4) == (518, 3, K4)
        assert pt.unmap(M2 + 5 * K4, 1) == []  # a hole
        assert pt.merge(M2, M2) is False
        pt.map(M2 + 5 * K4, 517, 1, 3)
        assert pt.merge(M2, M2) is True
        assert pt.merge(0, G1) is True
        assert pt.counts() == {K4: 0, M2: 0, G1: 1}

    def test_unmap_returns_runs(self, impl):
        pt = impl.PageTable()
        pt.map(0, 10, 4, 1)
        pt.map(4 * K4, 14, 4, 2)
        pt.map(10 * K4, 100, 2, 2)
        assert pt.unmap(0, 20) == [(0, 10, 4, 1), (4 * K4, 14, 4, 2), (10 * K4, 100, 2, 2)]
        assert pt.mapped_pages() == 0 and pt.runs() == []

    def test_split_merge(self, impl):
        pt = impl.PageTable()
        pt.map(0, 0, 512, 1)
        pt.split(0, K4)
        assert pt.count(K4) == 512 and pt.count(M2) == 0
        pt.split(0, K4)  # no-op
        with pytest.raises(ValueError):
            pt.split(0, M2)
        with pytest.raises(ValueError):
            pt.split(M2, K4)  # nothing mapped
        assert pt.merge(0, M2) is True
        assert pt.count(M2) == 1

    def test_runs_window_and_copy(self, impl):
        pt = impl.PageTable()
        pt.map(0, 0, 1024, 1)
        assert pt.runs(K4, 3 * K4) == [(K4, 1, 2, 1)]
        c = pt.copy()
        c.unmap(0, 1)
        assert c != pt and pt.mapped_pages() == 1024 and pt == pt.copy()

    def test_top_of_address_space(self, impl):
        pt = impl.PageTable()
        top = 2**64 - G1
        pt.map(top, 2**52 - 262144, 262144, 1)
        assert pt.count(G1) == 1
        assert pt.lookup(2**64 - 1) == (2**52 - 1, 1, G1)
        assert pt.unmap(2**64 - K4, 1) == [(2**64 - K4, 2**52 - 1, 1, 1)]
        with pytest.raises((ValueError, IndexError, OverflowError)):
            pt.map(2**64 - K4, 0, 2, 1)


SMALL_LEVELS = (4096, 16384, 65536, 262144)  # 1, 4, 16, 64 pages
NP = 160  # pages of iova space driven by the machine


def _machine(name):
    class PageTableMachine(RuleBasedStateMachine):
        """Drive a PageTable and a dict page -> (pfn, perm) with the same operations."""

        def __init__(self):
            super().__init__()
            self.pt = load_impl(name).PageTable(SMALL_LEVELS)
            self.ref = {}

        def runs_of(self, s, e):
            out = []
            for p in range(s, e):
                if p not in self.ref:
                    continue
                pfn, perm = self.ref[p]
                if out and out[-1][0] + out[-1][2] == p and out[-1][1] + out[-1][2] == pfn \
                        and out[-1][3] == perm:
                    out[-1][2] += 1
                else:
                    out.append([p, pfn, 1, perm])
            return [(p * 4096, pfn, n, perm) for p, pfn, n, perm in out]

        @rule(p=st.integers(0, NP - 1), n=st.integers(0, 80), pfn=st.integers(0, 300),
              perm=st.integers(0, 7), forced=st.none() | st.sampled_from(SMALL_LEVELS))
        def map(self, p, n, pfn, perm, forced):
            n = min(n, NP - p)
            busy = any(q in self.ref for q in range(p, p + n))
            lp = (forced or 4096) // 4096
            misaligned = forced is not None and (p % lp or pfn % lp or n % lp)
            if misaligned or (busy and n):
                with pytest.raises(ValueError):
                    self.pt.map(p * 4096, pfn, n, perm, leaf_size=forced)
                return
            assert self.pt.map(p * 4096, pfn, n, perm, leaf_size=forced) is None
            for i in range(n):
                self.ref[p + i] = (pfn + i, perm)

        @rule(p=st.integers(0, NP - 1), n=st.integers(0, 80))
        def unmap(self, p, n):
            n = min(n, NP - p)
            expected = self.runs_of(p, p + n)
            assert self.pt.unmap(p * 4096, n) == expected
            for q in range(p, p + n):
                self.ref.pop(q, None)

        @rule(p=st.integers(0, NP - 1), size=st.sampled_from(SMALL_LEVELS))
        def split(self, p, size):
            found = self.pt.lookup(p * 4096)
            if found is None or found[2] < size:
                with pytest.raises(ValueError):
                    self.pt.split(p * 4096, size)
            else:
                self.pt.split(p * 4096, size)
                assert self.pt.lookup(p * 4096)[2] == size

        @rule(p=st.integers(0, NP - 1), size=st.sampled_from(SMALL_LEVELS))
        def merge(self, p, size):
            lp = size // 4096
            p -= p % lp
            if p + lp > NP:
                return
            first = self.pt.lookup(p * 4096)
            ok = first is not None and first[2] < size and first[0] % lp == 0 and all(
                self.ref.get(p + i) == (first[0] + i, first[1]) for i in range(lp))
            assert self.pt.merge(p * 4096, size) is ok
            if ok:
                assert self.pt.lookup(p * 4096)[2] == size

        @rule(a=st.integers(0, NP), b=st.integers(0, NP))
        def runs_window(self, a, b):
            a, b = min(a, b), max(a, b)
            assert self.pt.runs(a * 4096, b * 4096) == self.runs_of(a, b)

        @invariant()
        def matches_reference(self):
            pt = self.pt
            assert pt.mapped_pages() == len(self.ref)
            assert pt.runs() == self.runs_of(0, NP)
            counts = pt.counts()
            assert sum(c * size // 4096 for size, c in counts.items()) == len(self.ref)
            assert all(pt.count(size) == c for size, c in counts.items())
            for p in range(NP):
                got = pt.lookup(p * 4096 + 123)
                if p not in self.ref:
                    assert got is None
                    continue
                pfn, perm, size = got
                assert (pfn, perm) == self.ref[p]
                lp = size // 4096
                head = p - p % lp
                assert self.ref[head][0] % lp == 0  # leaf frames are aligned
                assert all(self.ref.get(head + i) == (self.ref[head][0] + i, perm)
                           for i in range(lp))

    PageTableMachine.__name__ = f"PageTableMachine_{name}"
    return PageTableMachine


for _name in IMPLS:
    globals()[f"TestPageTableStateful_{_name}"] = _machine(_name).TestCase
