"""RangeMap: unit tests and a stateful comparison with a per-page list, on both implementations."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from _mm_impls import IMPLS, load_impl


def coalesced(rm):
    segs = list(rm.ranges())
    assert all(segs[i][1] == segs[i + 1][0] for i in range(len(segs) - 1))
    assert all(segs[i][2] != segs[i + 1][2] for i in range(len(segs) - 1)), segs
    return segs


class TestRangeMapUnit:
    def test_basic(self, impl):
        rm = impl.RangeMap(100)
        assert len(rm) == 100 and rm.len() == 100
        assert rm.segments() == 1
        assert list(rm.ranges()) == [(0, 100, 0)]
        assert rm.set(10, 20, 5) is None
        assert list(rm.ranges()) == [(0, 10, 0), (10, 20, 5), (20, 100, 0)]
        assert rm.get(9) == 0 and rm.get(10) == 5 and rm.get(19) == 5 and rm.get(20) == 0
        rm.set(20, 30, 5)
        assert rm.segments() == 3
        assert list(rm.ranges(15, 25)) == [(15, 25, 5)]
        assert rm.find(0, 100, 5) == 10
        assert rm.find(0, 10, 5) == -1
        assert rm.find_not(10, 30, 5) == -1
        assert rm.find_not(10, 31, 5) == 30
        assert rm.count(5) == 20 and rm.count(0) == 80 and rm.count(5, 25, 50) == 5
        rm.set(0, 100, 0)
        assert rm.segments() == 1

    def test_default_and_full_values(self, impl):
        top = 2**64 - 1
        rm = impl.RangeMap(10, default=top)
        assert rm.get(3) == top
        rm.set(2, 3, 0)
        assert rm.count(top) == 9
        assert rm.find(0, 10, 0) == 2

    def test_huge_space(self, impl):
        for n in (2**52, 2**63 - 1, 2**63):
            rm = impl.RangeMap(n)
            assert rm.len() == n
            rm.set(n - 5, n, 7)
            rm.set(0, 1, 1)
            assert rm.get(n - 1) == 7
            assert rm.count(0) == n - 6
            assert rm.find(1, n, 7) == n - 5
            assert list(rm.ranges(n - 6)) == [(n - 6, n - 5, 0), (n - 5, n, 7)]
        assert len(impl.RangeMap(2**63 - 1)) == 2**63 - 1
        with pytest.raises(OverflowError):
            len(impl.RangeMap(2**63))

    def test_empty_windows(self, impl):
        rm = impl.RangeMap(10)
        rm.set(5, 5, 3)
        rm.set(10, 10, 3)
        assert rm.segments() == 1
        assert list(rm.ranges(4, 4)) == []
        assert rm.find(3, 3, 0) == -1 and rm.find_not(3, 3, 1) == -1
        assert rm.count(0, 7, 7) == 0

    def test_zero_pages(self, impl):
        rm = impl.RangeMap(0)
        assert len(rm) == 0 and rm.segments() == 0 and list(rm.ranges()) == []
        with pytest.raises(IndexError):
            rm.get(0)

    def test_copy_and_eq(self, impl):
        rm = impl.RangeMap(1000)
        for i in range(0, 1000, 3):
            rm.set(i, i + 1, i % 5)
        c = rm.copy()
        assert c == rm and not (c != rm)
        c.set(0, 1000, 1)
        assert c != rm
        assert rm.count(1) == sum(1 for i in range(0, 1000, 3) if i % 5 == 1)
        assert impl.RangeMap(5) != impl.RangeMap(6)
        assert impl.RangeMap(5, default=0) == impl.RangeMap(5, default=0)
        assert (rm == "x") is False

    def test_many_segments_split_and_merge_chunks(self, impl):
        n = 20000
        rm = impl.RangeMap(n)
        for i in range(0, n, 2):
            rm.set(i, i + 1, 1 + (i // 2) % 3)
        assert rm.segments() == n
        assert rm.count(0) == n // 2
        for i in range(0, n, 2):
            rm.set(i, i + 1, 0)
        assert rm.segments() == 1
        for i in range(n - 2, 0, -2):
            rm.set(i, i + 1, 1)
        assert rm.segments() == n - 1
        rm.set(1, n - 1, 9)
        assert list(rm.ranges()) == [(0, 1, 0), (1, n - 1, 9), (n - 1, n, 0)]

    def test_mutation_during_iteration(self, impl):
        rm = impl.RangeMap(10)
        rm.set(2, 4, 1)
        it = rm.ranges()
        next(it)
        rm.set(5, 6, 2)
        with pytest.raises(RuntimeError):
            list(it)

    def test_memory_bytes(self, impl):
        rm = impl.RangeMap(10**6)
        for i in range(0, 10**6, 100):
            rm.set(i, i + 50, 1)
        assert rm.memory_bytes() > 0


def _machine(name):
    class RangeMapMachine(RuleBasedStateMachine):
        """Drive a RangeMap and a per-page list with the same operations."""

        def __init__(self):
            super().__init__()
            self.mod = load_impl(name)
            self.rm = None
            self.ref = None
            self.saved = None

        @initialize(n=st.integers(0, 300), default=st.integers(0, 3))
        def init(self, n, default):
            self.rm = self.mod.RangeMap(n, default=default)
            self.ref = [default] * n

        def window(self, data):
            n = len(self.ref)
            s = data.draw(st.integers(0, n))
            e = data.draw(st.integers(s, n))
            return s, e

        @rule(data=st.data(), v=st.integers(0, 3) | st.just(2**64 - 1))
        def set(self, data, v):
            s, e = self.window(data)
            assert self.rm.set(s, e, v) is None
            self.ref[s:e] = [v] * (e - s)

        @precondition(lambda self: self.ref)
        @rule(data=st.data())
        def get(self, data):
            i = data.draw(st.integers(0, len(self.ref) - 1))
            assert self.rm.get(i) == self.ref[i]

        @rule(data=st.data(), v=st.integers(0, 3))
        def find(self, data, v):
            s, e = self.window(data)
            ref = self.ref
            assert self.rm.find(s, e, v) == next((i for i in range(s, e) if ref[i] == v), -1)
            assert self.rm.find_not(s, e, v) == next(
                (i for i in range(s, e) if ref[i] != v), -1)

        @rule(data=st.data(), v=st.integers(0, 3))
        def count(self, data, v):
            s, e = self.window(data)
            assert self.rm.count(v, s, e) == self.ref[s:e].count(v)

        @rule(data=st.data())
        def ranges_window(self, data):
            s, e = self.window(data)
            flat = []
            for a, b, v in self.rm.ranges(s, e):
                assert s <= a < b <= e
                flat += [v] * (b - a)
            assert flat == self.ref[s:e]

        @rule()
        def save(self):
            self.saved = (self.rm.copy(), list(self.ref))

        @precondition(lambda self: self.saved is not None)
        @rule()
        def rollback(self):
            self.rm, self.ref = self.saved
            self.saved = (self.rm.copy(), list(self.ref))

        @invariant()
        def matches_reference(self):
            if self.rm is None:
                return
            segs = coalesced(self.rm)
            assert self.rm.segments() == len(segs)
            flat = []
            for a, b, v in segs:
                flat += [v] * (b - a)
            assert flat == self.ref
            assert len(self.rm) == len(self.ref)

    RangeMapMachine.__name__ = f"RangeMapMachine_{name}"
    return RangeMapMachine


for _name in IMPLS:
    globals()[f"TestRangeMapStateful_{_name}"] = _machine(_name).TestCase
