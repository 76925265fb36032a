"""A call into the memory core is one atomic step for other threads: the compiled core holds
the GIL from entry to return, and the pure twin takes one lock per call. Threads share the
maps (a vCPU's fault reads a guest_memfd's allocation map while a PUNCH_HOLE in another
thread rewrites it); a reader must see each update whole, never half done."""

import random
import sys
import threading


def test_readers_see_only_whole_updates(impl):
    """A writer sets random ranges to a value and then back to 0, each range at once; a
    reader running meanwhile (threads switching every microsecond) only ever sees pages
    of one writer step: every page 0, or a whole range at the step's value. (A list of
``ranges()`` is built in one step from the compiled core's iterator, in several from the
twin's: a change between two of them is the RuntimeError both raise.)"""
    rm = impl.RangeMap(1 << 12)
    steps = []
    errors = []
    done = threading.Event()

    def writer():
        rng = random.Random(1)
        for i in range(1, 3001):
            a = rng.randrange(4096)
            b = rng.randrange(a + 1, 4097)
            steps.append((a, b, i))
            rm.set(a, b, i)
            rm.set(a, b, 0)
        done.set()

    def reader():
        rng = random.Random(2)
        try:
            while not done.is_set():
                rm.get(rng.randrange(4096))
                try:
                    segs = list(rm.ranges())
                except RuntimeError as exc:  # a step between two items: both say so
                    assert str(exc) == "RangeMap changed during iteration"
                    continue
                values = {v for _, _, v in segs}
                assert len(values - {0}) <= 1, segs
                for s, e, v in segs:
                    if v:
                        a, b, i = steps[v - 1]
                        assert (s, e) == (a, b), (segs, steps[v - 1])
        except Exception as exc:  # (handed to the test's thread)
            errors.append(exc)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
