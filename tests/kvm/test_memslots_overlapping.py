"""Memslots.overlapping (the bisection set_memory_attributes uses) against a scan of
every slot: the same slots, in gfn order."""

from hypothesis import given
from hypothesis import strategies as st

from kmock.kvm.memslot import Memslot, Memslots


@st.composite
def _slots_and_range(draw):
    cuts = sorted(draw(st.sets(st.integers(0, 200), max_size=12)))
    slots = Memslots()
    for i, (a, b) in enumerate(zip(cuts[::2], cuts[1::2])):
        if draw(st.booleans()):  # leave some gaps out
            slots.insert(Memslot(None, 0, i, a, b - a, 0, 0))
    start = draw(st.integers(0, 210))
    end = draw(st.integers(start + 1, 220))
    return slots, start, end


@given(_slots_and_range())
def test_overlapping_is_the_scan(case):
    slots, start, end = case
    want = [s for s in slots if s.base_gfn < end and start < s.base_gfn + s.npages]
    assert list(slots.overlapping(start, end)) == want
