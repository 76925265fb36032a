"""kmock.locks: the compiled RLock and Condition behave as threading's (the pure run's
twins), single-threaded against a model and across threads."""

import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmock import locks
from kmock.compiled import pure_requested

sync = pytest.importorskip("kmock._sync")


def test_pure_run_uses_threading_locks():
    if pure_requested():
        assert locks.RLock is threading.RLock
    else:
        assert locks.RLock is sync.RLock and locks.Condition is sync.Condition


# --- one thread: the same answers and errors as threading.RLock, against a model -----------

OPS = st.lists(st.sampled_from(["acquire", "release", "try", "is_owned"]), max_size=40)


def _run(lock, ops):
    out = []
    for op in ops:
        try:
            if op == "acquire":
                out.append(lock.acquire())
            elif op == "try":
                out.append(lock.acquire(False))
            elif op == "release":
                out.append(lock.release())
            else:
                out.append(lock._is_owned())
        except RuntimeError as e:
            out.append(("RuntimeError", str(e)))
    return out


@settings(max_examples=200, deadline=None)
@given(OPS)
def test_rlock_matches_threading(ops):
    assert _run(sync.RLock(), ops) == _run(threading.RLock(), ops)


@pytest.mark.parametrize("make", [sync.RLock, threading.RLock])
def test_rlock_argument_errors(make):
    lock = make()
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 1)
    with pytest.raises(ValueError, match="must be positive"):
        lock.acquire(True, -2)
    with pytest.raises(OverflowError):
        lock.acquire(True, 1e300)
    assert not lock._is_owned()


# --- threads ---------------------------------------------------------------------------------


def test_rlock_excludes_other_threads_and_times_out():
    lock = sync.RLock()
    lock.acquire()
    lock.acquire()
    seen = []

    def other():
        seen.append(lock.acquire(False))
        t0 = time.monotonic()
        seen.append(lock.acquire(True, 0.05))
        seen.append(time.monotonic() - t0 >= 0.04)
        seen.append(lock.acquire())  # waits until the owner releases both levels
        lock.release()

    t = threading.Thread(target=other)
    t.start()
    time.sleep(0.1)
    lock.release()
    time.sleep(0.02)
    assert t.is_alive()  # one level still held
    lock.release()
    t.join(5)
    assert seen == [False, False, True, True]
    with pytest.raises(RuntimeError, match="un-acquired"):
        lock.release()


def test_rlock_release_by_another_thread_is_refused():
    lock = sync.RLock()
    lock.acquire()
    err = []
    t = threading.Thread(target=lambda: err.append(pytest.raises(RuntimeError, lock.release)))
    t.start()
    t.join()
    assert err and lock._is_owned()
    lock.release()


def test_rlock_counts_under_contention():
    lock = sync.RLock()
    box = [0]

    def work():
        for _ in range(2000):
            with lock:
                with lock:
                    v = box[0]
                    box[0] = v + 1

    ts = [threading.Thread(target=work) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert box[0] == 8000
    assert not lock._is_owned() and lock.acquire(False)


def test_condition_wait_notify_and_timeout():
    cond = sync.Condition()
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.wait(0)
    with pytest.raises(RuntimeError, match="un-acquired"):
        cond.notify_all()
    with cond:
        assert cond.wait(0.01) is False  # nobody notifies: the timeout
        assert cond._is_owned()
    state = {"ready": False}
    woke = []

    def waiter():
        with cond:
            cond.acquire()  # held twice: wait releases both levels
            while not state["ready"]:
                cond.wait(5)
            woke.append(cond._is_owned())
            cond.release()

    ts = [threading.Thread(target=waiter) for _ in range(3)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    with cond:
        state["ready"] = True
        cond.notify_all()
    for t in ts:
        t.join(5)
    assert woke == [True, True, True]
    assert cond.acquire(False)
    cond.release()


def test_condition_notify_one():
    cond = sync.Condition()
    woke = []

    def waiter(i):
        with cond:
            if cond.wait(2):
                woke.append(i)

    ts = [threading.Thread(target=waiter, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    with cond:
        cond.notify()
    time.sleep(0.05)
    assert len(woke) == 1
    with cond:
        cond.notify()
    for t in ts:
        t.join(5)
    assert sorted(woke) == [0, 1]


def test_contended_acquire_runs_signal_handlers():
    """A thread waiting for the lock still runs Python signal handlers (as threading's
    locks do): a handler that raises ends the wait with its exception."""
    import signal

    class Alarm(Exception):
        pass

    def handler(signum, frame):
        raise Alarm

    lock = sync.RLock()
    holder = threading.Thread(target=lock.acquire)
    holder.start()
    holder.join()  # held by a finished thread: never released
    old = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(Alarm):
            lock.acquire(True, 5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert not lock._is_owned()
