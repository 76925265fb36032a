"""Differential testing: random guest_memfd / memslot / mmap sequences, real kernel vs mock.

Hypothesis draws a sequence of operations (valid and invalid arguments mixed); each
operation runs on ``kmock.HostKernel()`` and then on ``kmock.Kernel(profile="host")``
in lockstep, and the normalized outcomes (see kmock.testing.conformance.Recorder) must
be equal at every step. The first divergence fails the example with the history.

Sizes are bounded so that nothing large is ever allocated on the real kernel: valid
guest_memfd sizes are at most 16 pages (fallocate checks ``offset + len > i_size``
before allocating), huge sizes appear only where they are rejected.
"""

import gc
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmock
from kmock.testing.conformance import Recorder, gmem_args, kvm_available, region2
from kmock.uapi import kvm as K

SKIP_REASON = "no /dev/kvm on this machine: conformance against the real kernel skipped"
pytestmark = [pytest.mark.conformance, pytest.mark.skipif(not kvm_available(), reason=SKIP_REASON)]

P = 4096
MMAP = K.GUEST_MEMFD_FLAG_MMAP
INIT = K.GUEST_MEMFD_FLAG_INIT_SHARED
GMEM = K.KVM_MEM_GUEST_MEMFD

pages = lambda lo, hi: st.integers(lo, hi).map(lambda n: n * P)  # noqa: E731

def weighted(*pairs):
    """A choice among strategies with integer weights (one_of would pick uniformly and
    drops repeated branches)."""
    return st.sampled_from([s for w, s in pairs for _ in range(w)]).flatmap(lambda s: s)


gmem_size = weighted(
    (6, pages(1, 16)),
    (1, st.sampled_from([0, 1, P - 1, P + 1, 2**63, 2**64 - P, 2**64 - 1])),
    (1, st.integers(0, 17 * P)),
)
gmem_flags = weighted(
    (6, st.sampled_from([0, MMAP, MMAP | INIT, MMAP | INIT])),
    (1, st.sampled_from([INIT, 1 << 2, 1 << 63, MMAP | 4])),
    (1, st.integers(0, 2**64 - 1)),
)
f_offset = weighted((5, pages(0, 20)), (1, st.integers(0, 20 * P)), (1, st.sampled_from([-P, 2**62, 2**63 - P])))
f_length = weighted((5, pages(0, 20)), (1, st.integers(-P, 20 * P)), (1, st.sampled_from([2**62, 2**63 - 1])))
f_mode = st.sampled_from([3, 3, 3, 1, 1, 1, 0, 2, 0x10, 0x11, 0x08, 0x20, 0x41, 0x80, 0x101, 0x13])
m_length = weighted((5, pages(1, 16)), (1, st.integers(0, 16 * P)))
m_prot = st.sampled_from([3, 3, 3, 1])
m_flags = st.sampled_from([1, 1, 1, 1, 1, 2, 3, 1 | 0x8000, 0])
m_offset = weighted((6, pages(0, 4)), (2, pages(0, 20)), (1, st.sampled_from([100, P - 1, 2**40])))
slot = weighted((6, st.integers(0, 3)), (1, st.sampled_from([32763, 32764, 1 | (1 << 16)])))
gpa = weighted((6, pages(0, 32)), (1, st.sampled_from([1 << 30, 1, 2**64 - P])))
r_size = weighted((6, pages(1, 8)), (1, st.sampled_from([0, 1, 2**64 - P])))
r_offset = weighted(
    (6, pages(0, 12)), (1, st.sampled_from([1, 2048, 0x7FFFFFFFFFFFF000, 2**63, 2**64 - P]))
)
r_flags = st.sampled_from([GMEM, GMEM, GMEM, GMEM, GMEM, 0, GMEM | 1, GMEM | 2, 1 << 3, 1])
idx = st.integers(0, 7)
access_off = weighted((4, st.integers(0, 4 * P)), (1, st.integers(0, 17 * P)))
access_len = weighted((4, st.integers(0, 64)), (2, st.integers(0, 3 * P)))

OPS = weighted(
    (3, st.tuples(st.just("create"), gmem_size, gmem_flags)),
    (2, st.tuples(st.just("fallocate"), idx, f_mode, f_offset, f_length)),
    (2, st.tuples(st.just("punch"), idx, f_offset, f_length)),
    (3, st.tuples(st.just("mmap"), idx, m_length, m_prot, m_flags, m_offset)),
    (3, st.tuples(st.just("read"), idx, access_off, access_len)),
    (3, st.tuples(st.just("write"), idx, access_off, access_len, st.integers(0, 255))),
    (3, st.tuples(st.just("bind"), slot, gpa, r_size, idx, r_offset, r_flags)),
    (2, st.tuples(st.just("unbind"), slot)),
    (1, st.tuples(st.just("close"), idx)),
    (1, st.tuples(st.just("munmap"), idx)),
    (1, st.tuples(st.just("fstat"), idx)),
    (1, st.tuples(st.just("dup"), idx)),
    (1, st.tuples(st.just("bind_vm2"), idx, r_offset)),
    (1, st.tuples(st.just("child"), idx, st.sampled_from(["fallocate", "punch", "vm_ioctl", "read_map"]))),
)
#: every sequence starts with a valid guest_memfd, so the later operations have a target
FIRST = st.tuples(st.just("create"), pages(1, 16), st.sampled_from([0, MMAP, MMAP | INIT, MMAP | INIT]))
SEQUENCES = st.tuples(FIRST, st.lists(OPS, min_size=1, max_size=24)).map(lambda t: [t[0]] + t[1])


class Side:
    """One kernel's view of the run: its recorder and the objects it handed out."""

    def __init__(self, sys):
        self.sys = sys
        self.rec = Recorder(sys)
        self.kvm = self.rec.call("open /dev/kvm", sys.open, "/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.vm = self.rec.call("KVM_CREATE_VM", sys.ioctl, self.kvm, K.KVM_CREATE_VM, 0)
        self.vm2 = None
        self.gmems = []
        self.maps = []

    def gmem(self, i):
        return self.gmems[i % len(self.gmems)] if self.gmems else None

    def mapping(self, i):
        return self.maps[i % len(self.maps)] if self.maps else None

    def step(self, op):
        """Run one operation; returns the label of the step it recorded (or None if skipped)."""
        sys, rec, kind = self.sys, self.rec, op[0]
        if kind == "create":
            _, size, flags = op
            label = f"create size={size:#x} flags={flags:#x}"
            fd = rec.call(label, sys.ioctl, self.vm, K.KVM_CREATE_GUEST_MEMFD, gmem_args(size, flags))
            if fd is not None:
                self.gmems.append(fd)
            return label
        if kind in ("fallocate", "punch", "close", "fstat"):
            fd = self.gmem(op[1])
            if fd is None:
                return None
            if kind == "fallocate":
                _, _, mode, off, ln = op
                label = f"fallocate mode={mode:#x} off={off:#x} len={ln:#x}"
                rec.call(label, sys.fallocate, fd, mode, off, ln)
            elif kind == "punch":
                _, _, off, ln = op
                label = f"punch off={off:#x} len={ln:#x}"
                rec.call(label, sys.fallocate, fd, 3, off, ln)
            elif kind == "fstat":
                label = "fstat"
                rec.call(label, sys.fstat, fd)
            else:
                label = "close gmem"
                self.gmems.remove(fd)
                rec.close(label, fd)
            return label
        if kind == "mmap":
            _, i, length, prot, flags, off = op
            fd = self.gmem(i)
            if fd is None:
                return None
            label = f"mmap len={length:#x} prot={prot} flags={flags:#x} off={off:#x}"
            m = rec.call(label, sys.mmap, fd, length, prot, flags, off)
            if m is not None:
                self.maps.append(m)
            return label
        if kind in ("read", "write", "munmap"):
            m = self.mapping(op[1])
            if m is None:
                return None
            if kind == "munmap":
                label = "munmap"
                rec.call(label, m.close)
                return label
            _, _, off, ln = op[:4]
            if kind == "read":
                label = f"read m[{off:#x}:{off + ln:#x}]"
                rec.access(label, m, slice(off, off + ln))
            else:
                val = op[4]
                label = f"write m[{off:#x}:{off + ln:#x}] = {val:#x}"
                # clip to the mapping like a memset within bounds; an empty result is fine
                rec.access(label, m, slice(off, off + ln), bytes([val]) * _clip(off, ln, op, m))
            return label
        if kind == "bind":
            _, sl, g, size, i, off, flags = op
            fd = self.gmem(i)
            fdv = fd if fd is not None else 9999
            label = f"bind slot={sl:#x} gpa={g:#x} size={size:#x} off={off:#x} flags={flags:#x}"
            rec.call(label, sys.ioctl, self.vm, K.KVM_SET_USER_MEMORY_REGION2, region2(sl, g, size, fdv, off, flags))
            return label
        if kind == "dup":
            fd = self.gmem(op[1])
            if fd is None:
                return None
            new = rec.call("dup gmem", sys.dup, fd)
            if new is not None:
                self.gmems.append(new)
            return "dup gmem"
        if kind == "bind_vm2":
            fd = self.gmem(op[1])
            if fd is None:
                return None
            if self.vm2 is None:
                self.vm2 = rec.call("KVM_CREATE_VM (second VM)", sys.ioctl, self.kvm, K.KVM_CREATE_VM, 0)
            label = f"bind into the second VM off={op[2]:#x}"
            rec.call(label, sys.ioctl, self.vm2, K.KVM_SET_USER_MEMORY_REGION2, region2(1, 0, P, fd, op[2]))
            return label
        if kind == "child":
            _, i, what = op
            fd, m = self.gmem(i), self.mapping(i)
            if what == "fallocate" and fd is not None:
                fn = lambda s: s.fallocate(fd, 1, 0, P)  # noqa: E731
            elif what == "punch" and fd is not None:
                fn = lambda s: s.fallocate(fd, 3, 0, 2 * P)  # noqa: E731
            elif what == "read_map" and m is not None:
                fn = lambda s: m[0:16]  # noqa: E731
            elif what == "vm_ioctl":
                fn = lambda s: s.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD, gmem_args(P))  # noqa: E731
            else:
                return None
            label = f"in a forked child: {what}"
            rec.child(label, fn)
            return label
        if kind == "unbind":
            label = f"unbind slot={op[1]:#x}"
            rec.call(label, sys.ioctl, self.vm, K.KVM_SET_USER_MEMORY_REGION2, region2(op[1], 0, 0, 0, 0, 0))
            return label
        raise AssertionError(op)

    def cleanup(self):
        self.rec.cleanup()
        self.sys.close_all()


def _clip(off, ln, op, m):
    """Number of bytes the write covers inside the mapping (so the assignment is a valid
    same-length slice assignment, as mmap.mmap requires)."""
    try:
        size = len(m)
    except ValueError:  # closed mapping: any length; the access raises ValueError anyway
        return ln
    return max(0, min(off + ln, size) - min(off, size))


def _history(host, mock):
    lines = []
    for i, (a, b) in enumerate(zip(host.rec.steps, mock.rec.steps)):
        mark = "  " if a == b else "!!"
        lines.append(f"{mark} {i:3} {a[0]}: host={a[1]!r} mock={b[1]!r}")
    return "\n".join(lines)


# 40 examples keep this well under a minute; KMOCK_HYPOTHESIS_PROFILE=thorough asks for more.
EXAMPLES = max(40, settings().max_examples) if os.environ.get("KMOCK_HYPOTHESIS_PROFILE") == "thorough" else 40


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(SEQUENCES)
def test_random_sequences_agree(ops):
    host = Side(kmock.HostKernel())
    try:
        mock = Side(kmock.Kernel(profile="host"))
    except BaseException:
        host.cleanup()
        raise
    try:
        assert host.rec.steps == mock.rec.steps, _history(host, mock)
        for op in ops:
            lh = host.step(op)
            lm = mock.step(op)
            assert lh == lm, f"lockstep lost at {op!r}\n" + _history(host, mock)
            assert host.rec.steps == mock.rec.steps, f"diverged at {op!r}\n" + _history(host, mock)
    finally:
        host.cleanup()
        mock.cleanup()


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(SEQUENCES)
def test_random_sequences_run_on_host(ops):
    """The generator itself is sound on the real kernel: no crash, no leaked fds."""
    gc.collect()  # earlier tests' kernels close their fds when collected, not mid-count
    before = len(os.listdir("/proc/self/fd"))
    h = kmock.HostKernel()
    side = Side(h)
    try:
        for op in ops:
            side.step(op)
        assert not [s for s in side.rec.steps if s[1][0] == "crash"]
    finally:
        side.cleanup()
    assert len(os.listdir("/proc/self/fd")) == before
