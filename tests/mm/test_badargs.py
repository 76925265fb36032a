"""Bad arguments raise Python exceptions with messages, identically on both implementations."""

import random

import pytest
from hypothesis import given, strategies as st

from _mm_impls import load_impl

ALLOWED = (IndexError, ValueError, TypeError, OverflowError)

junk = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([-1, 0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 2**64 + 1, -(2**64), True]),
    st.floats(allow_nan=True),
    st.none(),
    st.text(max_size=3),
    st.just(b"\x00"),
    st.just([1]),
)


def _outcome(fn):
    try:
        res = fn()
    except MemoryError as exc:
        return ("MemoryError", str(exc))
    except ALLOWED as exc:
        assert str(exc), f"{type(exc).__name__} without a message"
        return (type(exc).__name__, str(exc))
    if hasattr(res, "__next__"):
        res = list(res)
    return ("ok", res)


def _both(build, call):
    """Run call(build()) on both implementations; the outcomes must be identical."""
    outs = []
    for name in ("compiled", "pure"):
        mod = load_impl(name)
        outs.append(_outcome(lambda: call(build(mod))))
    assert outs[0] == outs[1]
    return outs[0]


def _rm(mod):
    rm = mod.RangeMap(1000)
    rm.set(10, 20, 3)
    return rm


@given(a=junk, b=junk, c=junk)
def test_rangemap_methods(a, b, c):
    _both(_rm, lambda rm: rm.set(a, b, c))
    _both(_rm, lambda rm: rm.get(a))
    _both(_rm, lambda rm: rm.find(a, b, c))
    _both(_rm, lambda rm: rm.find_not(a, b, c))
    _both(_rm, lambda rm: rm.count(a, b, c))
    _both(_rm, lambda rm: rm.ranges(a, b))
    _both(_rm, lambda rm: rm.count(3, a))


@given(a=junk, b=junk)
def test_rangemap_constructor(a, b):
    _both(lambda mod: mod, lambda mod: mod.RangeMap(a, b).segments())


@given(a=junk, b=junk, c=junk, d=junk, e=junk)
def test_pagetable_methods(a, b, c, d, e):
    def pt(mod):
        p = mod.PageTable()
        p.map(0, 0, 1024, 3)
        return p

    _both(pt, lambda p: p.map(a, b, c, d))
    _both(pt, lambda p: p.map(1 << 40, 0, 512, 1, leaf_size=e))
    _both(pt, lambda p: (p.unmap(a, b), p.counts()))
    _both(pt, lambda p: p.lookup(a))
    _both(pt, lambda p: (p.split(a, b), p.counts()))
    _both(pt, lambda p: (p.merge(a, b), p.counts()))
    _both(pt, lambda p: p.runs(a, b))
    _both(pt, lambda p: p.count(a))


@given(levels=st.one_of(junk, st.lists(junk, max_size=5)))
def test_pagetable_constructor(levels):
    _both(lambda mod: mod, lambda mod: mod.PageTable(levels).levels)


@given(a=junk, b=junk)
def test_frame_methods(a, b):
    def fa(mod):
        f = mod.FrameAllocator(1 << 20)
        f.alloc(9, owner=1)
        f.alloc(0, owner=2)
        return f

    _both(fa, lambda f: (f.alloc(a, b), f.allocated()))
    _both(fa, lambda f: f.alloc(0, a))
    _both(fa, lambda f: (f.free(a), f.allocated()))
    _both(fa, lambda f: (f.split(a, b), f.folios(0)))
    _both(fa, lambda f: (f.merge(a, b), f.folios(9)))
    _both(fa, lambda f: (f.owner(a), f.order_of(a)))
    _both(fa, lambda f: f.folios(a))
    _both(lambda mod: mod, lambda mod: mod.FrameAllocator(a, (0, 9)).allocated())
    _both(lambda mod: mod, lambda mod: len(mod.FrameAllocator(1 << 20, b).orders))


@pytest.mark.parametrize("name", ["compiled", "pure"])
def test_specific_errors(name):
    mod = load_impl(name)
    rm = mod.RangeMap(100)
    with pytest.raises(ValueError, match="reversed"):
        rm.set(50, 40, 1)
    with pytest.raises(ValueError, match=">= 0"):
        rm.set(-1, 40, 1)
    with pytest.raises(IndexError, match="beyond npages"):
        rm.set(0, 101, 1)
    with pytest.raises(IndexError):
        rm.get(100)
    with pytest.raises(IndexError):
        rm.get(2**64)
    with pytest.raises(TypeError, match="float"):
        rm.get(1.0)
    with pytest.raises(TypeError):
        rm.set(None, 4, 1)
    with pytest.raises(OverflowError):
        rm.set(0, 4, 2**64)
    with pytest.raises(OverflowError):
        rm.set(0, 4, -1)
    with pytest.raises(OverflowError):
        mod.RangeMap(2**63 + 1)
    with pytest.raises(ValueError):
        mod.RangeMap(-1)


@given(seed=st.integers(0, 2**32 - 1))
def test_compiled_and_pure_agree_on_many_segments(seed):
    """Long random runs (many chunks) give identical contents on both implementations."""
    rng = random.Random(seed)
    n = rng.choice([5000, 2**40])
    maps = [load_impl(name).RangeMap(n) for name in ("compiled", "pure")]
    span = min(n, 5000)
    for _ in range(1500):
        s = rng.randrange(span)
        e = min(span, s + rng.choice([1, 2, 7, 64, 700]))
        v = rng.randrange(4)
        for m in maps:
            m.set(s, e, v)
        a, b = rng.randrange(span), rng.randrange(span)
        a, b = min(a, b), max(a, b)
        q = rng.randrange(4)
        r = [(m.find(a, b, q), m.find_not(a, b, q), m.count(q, a, b)) for m in maps]
        assert r[0] == r[1]
    assert list(maps[0].ranges()) == list(maps[1].ranges())
    assert maps[0].segments() == maps[1].segments()
