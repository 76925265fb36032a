"""RangeMap with many segments: chunk splits and merges, chunk boundaries, the page-space
directory, the argument fast path; on both implementations, against a per-page reference
(or the other implementation where the map is too large for one)."""

import random

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from _mm_impls import IMPLS, load_impl


def flat(rm):
    out = []
    for a, b, v in rm.ranges():
        out += [v] * (b - a)
    return out


def check(rm, ref):
    segs = list(rm.ranges())
    assert all(segs[i][2] != segs[i + 1][2] for i in range(len(segs) - 1))
    assert rm.segments() == len(segs)
    assert flat(rm) == ref


def striped(impl, n, period=2):
    """A map of n pages with a breakpoint every period pages (values 1, 2, 3, 1, ...)."""
    rm = impl.RangeMap(n)
    ref = [0] * n
    for i in range(0, n, period):
        v = 1 + (i // period) % 3
        rm.set(i, min(n, i + period), v)
        ref[i:i + period] = [v] * len(ref[i:i + period])
    return rm, ref


class TestChunkBoundaries:
    # 3000 breakpoints: many chunks of the compiled core (128 per chunk at most) and
    # several of the pure twin (512)

    def test_set_around_every_position(self, impl):
        n = 3000
        rm, ref = striped(impl, n)
        rng = random.Random(5)
        for s in list(range(0, n, 7)) + [0, 1, n - 2, n - 1]:
            e = min(n, s + rng.choice([1, 2, 3, 5, 130, 300]))
            v = rng.randrange(4)
            rm.set(s, e, v)
            ref[s:e] = [v] * (e - s)
            assert rm.get(s) == v
            if s:
                assert rm.get(s - 1) == ref[s - 1]
            if e < n:
                assert rm.get(e) == ref[e]
        check(rm, ref)

    def test_coalescing_across_chunks(self, impl):
        n = 4000
        rm, ref = striped(impl, n)
        # equal values on both sides merge with the new segment across chunk boundaries
        for s in range(100, n - 400, 257):
            v = ref[s - 1]
            e = s + 300
            while ref[e] != v:
                e += 1
            rm.set(s, e, v)
            ref[s:e] = [v] * (e - s)
            check(rm, ref)
        # one set over almost everything: erases across all chunks at once
        rm.set(1, n - 1, ref[0])
        ref[1:n - 1] = [ref[0]] * (n - 2)
        check(rm, ref)
        assert rm.segments() == (1 if ref[-1] == ref[0] else 2)

    def test_first_and_last_segment(self, impl):
        n = 2000
        rm, ref = striped(impl, n)
        for s, e, v in [(0, 1, 3), (0, 5, 0), (n - 1, n, 2), (n - 7, n, 1), (0, n, 1),
                        (0, 1, 0), (n - 1, n, 0)]:
            rm.set(s, e, v)
            ref[s:e] = [v] * (e - s)
            check(rm, ref)
            assert rm.get(0) == ref[0] and rm.get(n - 1) == ref[-1]

    def test_grow_then_shrink_merges_chunks(self, impl):
        n = 6000
        rm = impl.RangeMap(n)
        ref = [0] * n
        order = list(range(0, n, 2))
        random.Random(7).shuffle(order)
        for i in order:  # splits at random positions
            rm.set(i, i + 1, 1 + i % 3)
            ref[i] = 1 + i % 3
        check(rm, ref)
        for i in order[: len(order) // 2]:  # chunks drain and merge
            rm.set(i, i + 1, 0)
            ref[i] = 0
        check(rm, ref)
        c = rm.copy()
        assert c == rm
        for i in range(0, n, 3):
            assert c.get(i) == ref[i]
        assert c.find(0, n, 2) == next(i for i in range(n) if ref[i] == 2)
        assert c.count(0) == ref.count(0)

    def test_scans_cross_chunks(self, impl):
        n = 3000
        rm, ref = striped(impl, n, period=3)
        for s, e in [(0, n), (5, 2000), (383, 390), (1000, 1001), (n - 10, n)]:
            for v in range(4):
                assert rm.count(v, s, e) == ref[s:e].count(v)
                assert rm.find(s, e, v) == next((i for i in range(s, e) if ref[i] == v), -1)
                assert rm.find_not(s, e, v) == next(
                    (i for i in range(s, e) if ref[i] != v), -1)
            assert [x for a, b, v in rm.ranges(s, e) for x in [v] * (b - a)] == ref[s:e]


class TestDirectory:
    """Keys crowded into a tiny part of a huge page space: every chunk in one bucket of
    the compiled core's directory, so lookups fall back to a binary search of firsts."""

    @pytest.mark.parametrize("n", [2**63, 2**63 - 1, 2**40 + 3])
    @pytest.mark.parametrize("where", ["low", "high", "both"])
    def test_clustered_keys(self, n, where):
        comp, pure = load_impl("compiled"), load_impl("pure")
        a, b = comp.RangeMap(n), pure.RangeMap(n)
        bases = {"low": [0], "high": [n - 20000], "both": [0, n - 20000, n // 2]}[where]
        rng = random.Random(11)
        for i in range(6000):
            base = bases[i % len(bases)]
            s = base + rng.randrange(20000)
            e = min(n, s + rng.randint(1, 3))
            v = rng.randrange(4)
            a.set(s, e, v)
            b.set(s, e, v)
        assert a.segments() > 1000
        assert list(a.ranges()) == list(b.ranges())
        for base in bases:
            for x in range(base, base + 20000, 37):
                assert a.get(x) == b.get(x)
        assert a.get(n - 1) == b.get(n - 1)
        assert a.count(0) == b.count(0)
        # wipe most of it (chunk removal refills the directory), then grow again
        a.set(1, n - 1, 2)
        b.set(1, n - 1, 2)
        assert list(a.ranges()) == list(b.ranges())
        for i in range(3000):
            s = bases[0] + rng.randrange(20000)
            a.set(s, s + 1, i % 4)
            b.set(s, s + 1, i % 4)
        assert list(a.ranges()) == list(b.ranges())

    def test_w1_shaped_against_pure(self):
        """Random 1..512-page sets over 2**28 pages (the W1 benchmark's shape, shorter)."""
        comp, pure = load_impl("compiled"), load_impl("pure")
        n = 2**28
        a, b = comp.RangeMap(n), pure.RangeMap(n)
        rng = random.Random(1)
        for _ in range(40000):
            s = rng.randrange(n - 512)
            e = s + rng.randint(1, 512)
            v = rng.randrange(4)
            a.set(s, e, v)
            b.set(s, e, v)
            x = rng.randrange(n)
            assert a.get(x) == b.get(x)
        assert a.segments() == b.segments() > 30000
        assert list(a.ranges()) == list(b.ranges())


class TestArgumentFastPath:
    """set/get read exact small ints directly; everything else takes the general path
    and must behave exactly as before."""

    def test_values_around_the_digit_limits(self, impl):
        n = 2**63
        rm = impl.RangeMap(n)
        for x in [0, 1, 2**30 - 1, 2**30, 2**60 - 1, 2**60, 2**62, n - 2]:
            for v in [0, 1, 2**30, 2**60 - 1, 2**60, 2**63, 2**64 - 1]:
                rm.set(x, x + 1, v)
                assert rm.get(x) == v
                assert type(rm.get(x)) is int
        assert rm.get(n - 1) == 0

    def test_int_like_arguments(self, impl):
        class I(int):
            pass

        class Idx:
            def __init__(self, v):
                self.v = v

            def __index__(self):
                return self.v

        rm = impl.RangeMap(100)
        rm.set(True, I(5), Idx(3))
        assert list(rm.ranges()) == [(0, 1, 0), (1, 5, 3), (5, 100, 0)]
        assert rm.get(True) == 3 and rm.get(I(4)) == 3 and rm.get(Idx(5)) == 0
        assert type(rm.get(I(4))) is int

    @pytest.mark.parametrize("args, exc", [
        ((-1, 5, 1), ValueError), ((5, 4, 1), ValueError), ((0, 101, 1), IndexError),
        ((0, 2**64, 1), IndexError), ((0, 5, -1), OverflowError), ((0, 5, 2**64), OverflowError),
        ((0.0, 5, 1), TypeError), ((0, 5, None), TypeError), (("0", 5, 1), TypeError),
        ((None, 5, 1), TypeError),
    ])
    def test_bad_set(self, impl, args, exc):
        rm = impl.RangeMap(100)
        with pytest.raises(exc):
            rm.set(*args)
        assert list(rm.ranges()) == [(0, 100, 0)]

    @pytest.mark.parametrize("index, exc", [
        (-1, IndexError), (100, IndexError), (2**64, IndexError), (-(2**70), IndexError),
        (1.0, TypeError), (None, TypeError),
    ])
    def test_bad_get(self, impl, index, exc):
        rm = impl.RangeMap(100)
        with pytest.raises(exc):
            rm.get(index)

    def test_same_messages_on_both(self):
        comp, pure = load_impl("compiled"), load_impl("pure")
        for call in [lambda m: m.RangeMap(10).set(3, 2, 1), lambda m: m.RangeMap(10).set(0, 11, 1),
                     lambda m: m.RangeMap(10).set(0, 1, -5), lambda m: m.RangeMap(10).get(10),
                     lambda m: m.RangeMap(10).get(-3), lambda m: m.RangeMap(10).set(-1, 2, 0)]:
            msgs = []
            for m in (comp, pure):
                with pytest.raises(Exception) as ei:
                    call(m)
                msgs.append((type(ei.value), str(ei.value)))
            assert msgs[0] == msgs[1]


def _many_segments_machine(name):
    class ManySegmentsMachine(RuleBasedStateMachine):
        """Like the RangeMap state machine, on maps large and fragmented enough to have
        many chunks (splits, merges, sets across chunk boundaries)."""

        def __init__(self):
            super().__init__()
            self.mod = load_impl(name)

        @initialize(n=st.integers(600, 3000), period=st.integers(1, 4), default=st.integers(0, 3))
        def init(self, n, period, default):
            self.rm = self.mod.RangeMap(n, default=default)
            self.ref = [default] * n
            for i in range(0, n, period):
                v = (i // period) % 4
                e = min(n, i + period)
                self.rm.set(i, e, v)
                self.ref[i:e] = [v] * (e - i)

        @rule(data=st.data(), v=st.integers(0, 3))
        def set_short(self, data, v):
            n = len(self.ref)
            s = data.draw(st.integers(0, n - 1))
            e = data.draw(st.integers(s, min(n, s + 8)))
            self.rm.set(s, e, v)
            self.ref[s:e] = [v] * (e - s)

        @rule(data=st.data(), v=st.integers(0, 3))
        def set_long(self, data, v):
            n = len(self.ref)
            s = data.draw(st.integers(0, n))
            e = data.draw(st.integers(s, n))
            self.rm.set(s, e, v)
            self.ref[s:e] = [v] * (e - s)

        @rule(data=st.data())
        def stripe(self, data):
            """Fragment a window (many inserts: chunk splits)."""
            n = len(self.ref)
            s = data.draw(st.integers(0, n - 1))
            e = data.draw(st.integers(s, min(n, s + 600)))
            for i in range(s, e, 2):
                v = (i // 2) % 3 + 1
                self.rm.set(i, i + 1, v)
                self.ref[i] = v

        @rule(data=st.data())
        def get(self, data):
            i = data.draw(st.integers(0, len(self.ref) - 1))
            assert self.rm.get(i) == self.ref[i]

        @rule(data=st.data(), v=st.integers(0, 3))
        def find_count(self, data, v):
            n = len(self.ref)
            s = data.draw(st.integers(0, n))
            e = data.draw(st.integers(s, n))
            ref = self.ref
            assert self.rm.count(v, s, e) == ref[s:e].count(v)
            assert self.rm.find(s, e, v) == next((i for i in range(s, e) if ref[i] == v), -1)

        @rule()
        def copy(self):
            self.rm = self.rm.copy()

        @invariant()
        def matches_reference(self):
            check(self.rm, self.ref)

    ManySegmentsMachine.__name__ = f"ManySegmentsMachine_{name}"
    ManySegmentsMachine.TestCase.settings = settings(max_examples=25, stateful_step_count=30,
                                                     deadline=None)
    return ManySegmentsMachine


for _name in IMPLS:
    globals()[f"TestManySegmentsStateful_{_name}"] = _many_segments_machine(_name).TestCase
