"""FrameAllocator: unit tests and a stateful comparison with a per-frame list."""

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from _mm_impls import IMPLS, load_impl


class TestFrameAllocatorUnit:
    def test_alloc_free(self, impl):
        fa = impl.FrameAllocator(1 << 30)
        assert fa.orders == (0, 9, 18)
        assert fa.alloc(0) == 0
        assert fa.alloc(9, owner=5) == 512
        assert fa.alloc(0) == 1
        assert fa.alloc(18, owner=2) == 1 << 18
        assert fa.allocated() == 2 + 512 + (1 << 18)
        assert fa.folios(0) == 2 and fa.folios(9) == 1 and fa.folios(18) == 1
        assert fa.owner(600) == 5 and fa.order_of(600) == 9
        assert fa.owner(5000) == -1 and fa.order_of(5000) == -1
        with pytest.raises(ValueError):
            fa.free(513)  # not a head
        with pytest.raises(ValueError):
            fa.free(5000)  # free frame
        fa.free(512)
        assert fa.alloc(0, owner=1) == 2
        assert fa.alloc(9) == 512

    def test_sparse_huge_machine(self, impl):
        fa = impl.FrameAllocator(1 << 30)  # 4 TiB
        for _ in range(1000):
            fa.alloc(9, owner=1)
        assert fa.folios(9) == 1000

    def test_exhaustion(self, impl):
        fa = impl.FrameAllocator(1024)
        assert fa.alloc(9) == 0
        assert fa.alloc(0) == 512
        with pytest.raises(MemoryError):
            fa.alloc(9)
        for _ in range(511):
            fa.alloc(0)
        with pytest.raises(MemoryError):
            fa.alloc(0)
        with pytest.raises(MemoryError):
            fa.alloc(18)

    def test_split_merge(self, impl):
        fa = impl.FrameAllocator(4096)
        p = fa.alloc(9, owner=3)
        fa.split(p, 0)
        assert fa.folios(0) == 512 and fa.folios(9) == 0 and fa.owner(p + 7) == 3
        with pytest.raises(ValueError):
            fa.split(p, 9)  # order-0 folio cannot grow by split
        assert fa.merge(p, 9) is True
        assert fa.folios(9) == 1
        assert fa.merge(p, 9) is False  # already a folio of that order
        q = fa.alloc(9, owner=3)
        fa.split(q, 0)
        fa.free(q + 3)
        assert fa.merge(q, 9) is False
        assert fa.alloc(0, owner=4) == q + 3
        assert fa.merge(q, 9) is False  # mixed owners
        c = fa.copy()
        assert c == fa
        c.free(q + 3)
        assert c != fa


ORDERS = (0, 2, 4)


def _machine(name):
    class FrameMachine(RuleBasedStateMachine):
        """Drive a FrameAllocator and a per-frame list of (owner, order) or None."""

        def __init__(self):
            super().__init__()
            self.mod = load_impl(name)
            self.fa = None
            self.ref = None

        @initialize(n=st.integers(1, 200))
        def init(self, n):
            self.fa = self.mod.FrameAllocator(n, orders=ORDERS)
            self.ref = [None] * n

        def heads(self):
            return [p for p, x in enumerate(self.ref) if x and p % (1 << x[1]) == 0]

        @rule(order=st.sampled_from(ORDERS), owner=st.integers(0, 2))
        def alloc(self, order, owner):
            size = 1 << order
            n = len(self.ref)
            exp = next((st_ for st_ in range(0, n - size + 1, size)
                        if all(x is None for x in self.ref[st_:st_ + size])), None)
            if exp is None:
                with pytest.raises(MemoryError):
                    self.fa.alloc(order, owner=owner)
                return
            assert self.fa.alloc(order, owner=owner) == exp
            self.ref[exp:exp + size] = [(owner, order)] * size

        @rule(data=st.data())
        def free(self, data):
            heads = self.heads()
            if heads and data.draw(st.booleans()):
                p = data.draw(st.sampled_from(heads))
                self.fa.free(p)
                self.ref[p:p + (1 << self.ref[p][1])] = [None] * (1 << self.ref[p][1])
            else:
                p = data.draw(st.integers(0, len(self.ref) - 1))
                if p not in heads:
                    with pytest.raises(ValueError):
                        self.fa.free(p)

        @rule(data=st.data(), to=st.sampled_from(ORDERS))
        def split(self, data, to):
            heads = self.heads()
            if not heads:
                return
            p = data.draw(st.sampled_from(heads))
            owner, order = self.ref[p]
            if to > order:
                with pytest.raises(ValueError):
                    self.fa.split(p, to)
                return
            self.fa.split(p, to)
            self.ref[p:p + (1 << order)] = [(owner, to)] * (1 << order)

        @rule(p=st.integers(0, 199), order=st.sampled_from(ORDERS))
        def merge(self, p, order):
            size = 1 << order
            p -= p % size
            if p + size > len(self.ref):
                return
            blk = self.ref[p:p + size]
            ok = all(blk) and blk[0][1] < order and all(x[0] == blk[0][0] for x in blk)
            assert self.fa.merge(p, order) is ok
            if ok:
                self.ref[p:p + size] = [(blk[0][0], order)] * size

        @invariant()
        def matches_reference(self):
            if self.fa is None:
                return
            fa = self.fa
            assert fa.allocated() == sum(1 for x in self.ref if x)
            for o in ORDERS:
                assert fa.folios(o) == sum(1 for p in self.heads() if self.ref[p][1] == o)
            for p, x in enumerate(self.ref):
                assert fa.owner(p) == (x[0] if x else -1)
                assert fa.order_of(p) == (x[1] if x else -1)

    FrameMachine.__name__ = f"FrameMachine_{name}"
    return FrameMachine


for _name in IMPLS:
    globals()[f"TestFrameAllocatorStateful_{_name}"] = _machine(_name).TestCase
