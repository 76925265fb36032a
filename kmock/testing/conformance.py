"""Conformance scenarios: the same syscalls on the real kernel and on the mock.

A *scenario* is a function ``fn(sys, rec)`` that uses only the syscall API
(:class:`kmock.syscall_api.SyscallAPI`) and :mod:`kmock.uapi.kvm`. It opens /dev/kvm
itself, creates what it needs, and runs every step through a :class:`Recorder`, which
stores a normalized outcome per step:

* ``('ok', value)``: the call returned; fds are renamed ``'fd1'``, ``'fd2'``... in
  order of appearance, stat results become ``('stat', st_mode, st_size, st_blksize,
  st_blocks, st_nlink)``, long byte strings become runs or a digest;
* ``('errno', 'EINVAL')``: the call raised OSError;
* ``('sigbus', offset)``: a mapping access raised :class:`kmock.SigBus`;
* ``('exc', 'IndexError')``: a mapping access raised what ``mmap.mmap`` raises.

Recorded on ``kmock.HostKernel()`` and on ``kmock.Kernel(profile="host")``, two runs
of a scenario must give equal step lists. ``conform()`` runs them all and prints a
table; ``kmock conform`` calls it.

The scenarios cover every row of the probe table (reference §5.1, rows 1-43), the
facts of §4.1-4.6 and §5.2 that need no guest code, and every test case of the 6.18
``guest_memfd_test.c`` (§6.1) that runs no guest code, for each VM type the kernel
offers and each flag combination the selftest uses.
"""

import ctypes
import difflib
import errno
import hashlib
import os
import pickle
import select
import signal

from ..errors import SigBus
from ..syscall_api import Mapping
from ..uapi import kvm as K

P = 4096
O_KVM = os.O_RDWR | os.O_CLOEXEC

PROT_READ = 1
PROT_WRITE = 2
PROT_RW = PROT_READ | PROT_WRITE
MAP_SHARED = 0x01
MAP_PRIVATE = 0x02
MAP_SHARED_VALIDATE = 0x03
MAP_POPULATE = 0x8000

KEEP = 0x01  # FALLOC_FL_KEEP_SIZE
PUNCH = 0x02  # FALLOC_FL_PUNCH_HOLE
COLLAPSE = 0x08
ZERO = 0x10
INSERT = 0x20
UNSHARE = 0x40
WRITE_ZEROES = 0x80

MMAP = K.GUEST_MEMFD_FLAG_MMAP
INIT_SHARED = K.GUEST_MEMFD_FLAG_INIT_SHARED

#: ioctls whose non-negative return value is a new fd
FD_IOCTLS = frozenset({K.KVM_CREATE_VM, K.KVM_CREATE_VCPU, K.KVM_CREATE_GUEST_MEMFD,
                       K.KVM_GET_STATS_FD})

_NOVALUE = object()

# --- normalization -------------------------------------------------------------------


def errname(code):
    return errno.errorcode.get(code, str(code))


def norm_bytes(b):
    """Short byte strings as they are; long ones as runs of equal bytes, or a digest."""
    b = bytes(b)
    if len(b) <= 32:
        return b
    runs = []
    start = 0
    n = len(b)
    while start < n:
        v = b[start]
        stripped = b[start:].lstrip(bytes((v,)))
        end = n - len(stripped)
        runs.append((start, end, v))
        if len(runs) > 8:
            return ("bytes", n, "sha256:" + hashlib.sha256(b).hexdigest()[:16])
        start = end
    return ("bytes", n, tuple(runs))


def stat_tuple(st):
    return ("stat", st.st_mode, st.st_size, st.st_blksize, st.st_blocks, st.st_nlink)


def norm_value(v):
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return norm_bytes(v)
    if isinstance(v, os.stat_result):
        return stat_tuple(v)
    if isinstance(v, Mapping):
        return ("mapping", len(v))
    if isinstance(v, (ctypes.Structure, ctypes.Union, ctypes.Array)):
        return norm_bytes(bytes(v))
    if isinstance(v, (tuple, list)):
        return tuple(norm_value(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, norm_value(x)) for k, x in v.items()))
    return repr(v)


def _returns_fd(fn, args):
    name = getattr(fn, "__name__", "")
    if name in ("open", "dup"):
        return True
    return name == "ioctl" and len(args) >= 2 and args[1] in FD_IOCTLS


def outcome_of(fn, *args):
    """Run ``fn(*args)`` and return its normalized outcome (fds become ``'fd'``)."""
    try:
        v = fn(*args)
    except SigBus as e:
        return ("sigbus", e.offset)
    except OSError as e:
        return ("errno", errname(e.errno))
    if _returns_fd(fn, args) and isinstance(v, int):
        return ("ok", "fd")
    return ("ok", norm_value(v))


# --- the recorder --------------------------------------------------------------------


class Recorder:
    """Runs the steps of one scenario on one kernel and records their outcomes."""

    def __init__(self, sys):
        self.sys = sys
        self.steps = []
        self._fdnames = {}
        self._count = 0
        self._fds = []  # fds handed out through this recorder, for cleanup
        self._maps = []

    # naming -----------------------------------------------------------------------

    def fdname(self, fd):
        self._count += 1
        name = f"fd{self._count}"
        self._fdnames[fd] = name
        return name

    def _append(self, label, outcome):
        self.steps.append((label, outcome))

    # steps ------------------------------------------------------------------------

    def call(self, label, fn, *args):
        """Run one syscall step; return its value (None if it failed)."""
        try:
            v = fn(*args)
        except SigBus as e:
            self._append(label, ("sigbus", e.offset))
            return None
        except OSError as e:
            self._append(label, ("errno", errname(e.errno)))
            return None
        if _returns_fd(fn, args) and isinstance(v, int) and v >= 0:
            self._fds.append(v)
            self._append(label, ("ok", self.fdname(v)))
        elif isinstance(v, Mapping):
            self._maps.append(v)
            self._append(label, ("ok", norm_value(v)))
        else:
            self._append(label, ("ok", norm_value(v)))
        return v

    def access(self, label, m, key, value=_NOVALUE):
        """Read ``m[key]`` (or write ``m[key] = value``) through a mapping."""
        try:
            if value is _NOVALUE:
                v = m[key]
            else:
                m[key] = value
                v = None
        except SigBus as e:
            self._append(label, ("sigbus", e.offset))
            return None
        except (IndexError, ValueError, TypeError) as e:
            self._append(label, ("exc", type(e).__name__))
            return None
        self._append(label, ("ok", norm_value(v)))
        return v

    def record(self, label, value):
        """Record a derived fact (a boolean, a struct field) as an 'ok' step."""
        self._append(label, ("ok", norm_value(value)))
        return value

    def outcome(self, label, outcome):
        self._append(label, outcome)
        return outcome

    def runs(self, label, outcomes):
        """Record a long list of outcomes compactly, as runs (first, last, outcome)."""
        runs = []
        for i, o in outcomes:
            if runs and runs[-1][2] == o and runs[-1][1] + 1 == i:
                runs[-1][1] = i
            else:
                runs.append([i, i, o])
        self._append(label, ("runs", tuple(tuple(r) for r in runs)))

    def child(self, label, fn):
        """Run ``fn(sys)`` in a forked child and record its outcome."""
        return self.outcome(label, in_child(self.sys, fn))

    # teardown ---------------------------------------------------------------------

    def forget(self, fd):
        """The scenario closed ``fd`` itself."""
        try:
            self._fds.remove(fd)
        except ValueError:
            pass

    def close(self, label, fd):
        self.forget(fd)
        return self.call(label, self.sys.close, fd)

    def cleanup(self):
        """Unmap and close whatever the scenario left open (not recorded)."""
        for m in reversed(self._maps):
            try:
                m.close()
            except Exception:
                pass
        self._maps.clear()
        for fd in reversed(self._fds):
            try:
                self.sys.close(fd)
            except Exception:
                pass
        self._fds.clear()


# --- running in a forked child ------------------------------------------------------


def in_child(sys, fn, timeout=30.0):
    """Run ``fn(sys)`` in a forked child; return its normalized outcome.

    The VM's owner is the parent's mm, so VM and vCPU ioctls from the child get EIO
    while /dev/kvm ioctls and fallocate on a guest_memfd keep working. ``fn`` may
    return a value (normalized like a step's value; use :func:`outcome_of` to return
    several sub-outcomes) or raise OSError/SigBus. Works for the mock too: after fork
    the child holds a copy of the mock and notices the pid change.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            try:
                out = outcome_of(fn, sys)
            except (IndexError, ValueError, TypeError) as e:
                # as a mapping access's step (Recorder.access): the type, not the text
                # (kmock's messages say more than the mmap module's)
                out = ("exc", type(e).__name__)
            except BaseException as e:  # noqa: BLE001 - report anything to the parent
                out = ("crash", f"{type(e).__name__}: {e}")
            data = pickle.dumps(out)
            while data:
                n = os.write(w, data)
                data = data[n:]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    poller = select.poll()  # (not select: the pipe may be above FD_SETSIZE in a busy process)
    poller.register(r, select.POLLIN)
    try:
        while True:
            ready = poller.poll(timeout * 1000)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return ("crash", f"child timed out after {timeout}s")
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return ("crash", f"child exited with status {status:#x} and no result")
    return pickle.loads(b"".join(chunks))


# --- the registry --------------------------------------------------------------------

SCENARIOS = {}


def scenario(name, doc=""):
    """Register ``fn(sys, rec)`` as a conformance scenario."""

    def deco(fn):
        if name in SCENARIOS:
            raise ValueError(f"duplicate scenario {name!r}")
        fn.scenario_name = name
        fn.scenario_doc = doc or (fn.__doc__ or "").strip()
        SCENARIOS[name] = fn
        return fn

    return deco


def run_scenario(name, sys):
    """Run one scenario on ``sys``; return the recorded steps [(label, outcome), ...]."""
    fn = SCENARIOS[name]
    rec = Recorder(sys)
    try:
        fn(sys, rec)
    except Exception as e:  # a scenario must not crash; if it does, that is a step too
        rec.outcome("<scenario raised>", ("crash", f"{type(e).__name__}: {e}"))
    finally:
        rec.cleanup()
    return rec.steps


def _fmt(outcome):
    return repr(outcome)


def compare(a, b, names=("host", "mock")):
    """Differences between two step lists, as readable strings ([] if equal).

    Steps are aligned by label (difflib), so a step present on one side only is
    reported as missing on the other instead of shifting every later step.
    """
    if a == b:
        return []
    diffs = []
    la = [s[0] for s in a]
    lb = [s[0] for s in b]
    n0, n1 = names
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, la, lb, autojunk=False).get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                if a[i][1] != b[j][1]:
                    diffs.append(f"step {i} {a[i][0]!r}: {n0}={_fmt(a[i][1])} {n1}={_fmt(b[j][1])}")
            continue
        for i in range(i1, i2):
            diffs.append(f"step {i} {a[i][0]!r}: {n0}={_fmt(a[i][1])} {n1}=<missing>")
        for j in range(j1, j2):
            diffs.append(f"{n1} step {j} {b[j][0]!r}: {n0}=<missing> {n1}={_fmt(b[j][1])}")
    return diffs


def kvm_available():
    """True if /dev/kvm exists and can be opened read-write."""
    try:
        fd = os.open("/dev/kvm", O_KVM)
    except OSError:
        return False
    os.close(fd)
    return True


def _summary(steps):
    crash = [s for s in steps if s[1][0] == "crash"]
    if crash:
        return f"{len(steps)} steps, CRASH"
    return f"{len(steps)} steps"


def conform(out=print, names=None):
    """Run every scenario (or ``names``) on the real kernel and on the mock.

    Prints a table (scenario, host, mock, match), the differences of every mismatch,
    and the last line ``conformance: N/M scenarios match``. Returns ``(N, M)``.
    Without a usable /dev/kvm it prints that it cannot run and returns ``(0, 0)``.
    """
    if not kvm_available():
        out("conformance: cannot run: no usable /dev/kvm on this machine")
        return (0, 0)
    from ..host import HostKernel

    try:
        from ..kernel import Kernel

        make_mock = lambda: Kernel(profile="host")  # noqa: E731
        make_mock().close_all()
        mock_error = None
    except Exception as e:  # the mock could not be built: every scenario mismatches
        make_mock = None
        mock_error = f"{type(e).__name__}: {e}"

    selected = list(SCENARIOS) if names is None else list(names)
    width = max([len(n) for n in selected] + [8])
    out(f"{'scenario':<{width}}  {'host':<18}  {'mock':<18}  match")
    matched = 0
    details = []
    for name in selected:
        with HostKernel() as h:
            hs = run_scenario(name, h)
        if make_mock is None:
            ms = [("<mock>", ("crash", mock_error))]
        else:
            try:
                with make_mock() as m:
                    ms = run_scenario(name, m)
            except Exception as e:
                ms = [("<mock>", ("crash", f"{type(e).__name__}: {e}"))]
        diffs = compare(hs, ms)
        ok = not diffs
        matched += ok
        out(f"{name:<{width}}  {_summary(hs):<18}  {_summary(ms):<18}  {'yes' if ok else 'NO'}")
        if not ok:
            details.append((name, diffs))
    for name, diffs in details:
        out(f"--- {name}: {len(diffs)} difference(s)")
        for d in diffs[:20]:
            out(f"    {d}")
        if len(diffs) > 20:
            out(f"    ... {len(diffs) - 20} more")
    total = len(selected)
    out(f"conformance: {matched}/{total} scenarios match")
    return (matched, total)


# =====================================================================================
# helpers for scenarios
# =====================================================================================


def open_kvm(sys, rec):
    return rec.call("open /dev/kvm", sys.open, "/dev/kvm", O_KVM)


def create_vm(sys, rec, kvm, vm_type=0, label=None):
    return rec.call(label or f"KVM_CREATE_VM type {vm_type}", sys.ioctl, kvm, K.KVM_CREATE_VM, vm_type)


def gmem_args(size, flags=0, reserved=None):
    a = K.kvm_create_guest_memfd(size=size & (2**64 - 1), flags=flags & (2**64 - 1))
    for i, v in (reserved or {}).items():
        a.reserved[i] = v
    return a


def create_gmem(sys, rec, vm, size, flags=0, label=None, reserved=None):
    return rec.call(
        label or f"KVM_CREATE_GUEST_MEMFD size={size:#x} flags={flags:#x}",
        sys.ioctl,
        vm,
        K.KVM_CREATE_GUEST_MEMFD,
        gmem_args(size, flags, reserved),
    )


def region2(slot, gpa, size, fd=0, offset=0, flags=K.KVM_MEM_GUEST_MEMFD, uaddr=0, pad1=0, pad2_0=0):
    r = K.kvm_userspace_memory_region2(
        slot=slot & 0xFFFFFFFF,
        flags=flags & 0xFFFFFFFF,
        guest_phys_addr=gpa & (2**64 - 1),
        memory_size=size & (2**64 - 1),
        userspace_addr=uaddr & (2**64 - 1),
        guest_memfd_offset=offset & (2**64 - 1),
        guest_memfd=(fd if fd is not None else 0xFFFFFFFF) & 0xFFFFFFFF,
        pad1=pad1,
    )
    r.pad2[0] = pad2_0
    return r


def set_region2(sys, rec, vm, label, slot, gpa, size, fd=0, offset=0, flags=K.KVM_MEM_GUEST_MEMFD, **kw):
    return rec.call(
        label, sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2, region2(slot, gpa, size, fd, offset, flags, **kw)
    )


def delete_slot(sys, rec, vm, slot, label=None):
    return set_region2(sys, rec, vm, label or f"delete slot {slot}", slot, 0, 0, 0, 0, 0)


def check_ext(sys, rec, fd, cap, where):
    return rec.call(f"KVM_CHECK_EXTENSION({cap}) on {where}", sys.ioctl, fd, K.KVM_CHECK_EXTENSION, cap)


def vm_with_vcpu(sys, rec):
    """/dev/kvm, a default VM and its vCPU 0 (None when the vCPU could not be made)."""
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    return kvm, vm, rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)


def vm_with_gmem(sys, rec, size=4 * P, flags=0):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, size, flags)
    return kvm, vm, g


def selftest_combos(sys, rec, kvm):
    """Yield (vm_fd, vm_type, flags) like guest_memfd_test.c's main/test_guest_memfd.

    For each VM type in KVM_CAP_VM_TYPES (default only if 0): create the VM, read its
    KVM_CAP_GUEST_MEMFD_FLAGS, and offer flags 0, MMAP (if supported) and
    MMAP|INIT_SHARED (if INIT_SHARED is supported).
    """
    types = check_ext(sys, rec, kvm, K.KVM_CAP_VM_TYPES, "/dev/kvm") or 1
    for t in range(32):
        if not types & (1 << t):
            continue
        vm = create_vm(sys, rec, kvm, t)
        if vm is None:
            continue
        cap = check_ext(sys, rec, vm, K.KVM_CAP_GUEST_MEMFD_FLAGS, f"VM type {t}") or 0
        combos = [0]
        if cap & MMAP:
            combos.append(MMAP)
        if cap & INIT_SHARED:
            combos.append(MMAP | INIT_SHARED)
        for flags in combos:
            yield vm, t, flags
        rec.close(f"close VM type {t}", vm)


def gmem_test(sys, rec, want, body, size=4 * P):
    """The selftest's gmem_test(): for every (VM type, flags) with want(flags), create
    a guest_memfd of 4 pages, run body(sys, rec, fd, size, tag), close it."""
    kvm = open_kvm(sys, rec)
    for vm, t, flags in selftest_combos(sys, rec, kvm):
        if not want(flags):
            continue
        tag = f"[type {t} flags {flags:#x}]"
        fd = create_gmem(sys, rec, vm, size, flags, label=f"{tag} vm_create_guest_memfd(4P)")
        if fd is None:
            continue
        body(sys, rec, fd, size, tag)
        rec.close(f"{tag} close gmem", fd)


# =====================================================================================
# §5.1 probe table, rows 1-43
# =====================================================================================


@scenario("probe_01_create_gmem_bad_sizes", "size 0 / 1 / 4095 / 4097 -> EINVAL")
def probe_01(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for size in (0, 1, 4095, 4097):
        create_gmem(sys, rec, vm, size)


@scenario("probe_02_create_gmem_negative_sizes", "size 2^63 / 0xfffffffffffff000 (negative loff_t) -> EINVAL")
def probe_02(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for size in (2**63, 0xFFFFFFFFFFFFF000, 2**64 - 1):
        create_gmem(sys, rec, vm, size)


@scenario("probe_03_create_gmem_huge_sizes", "size 0x7ffffffffffff000 / 2^62 / 2^40 succeed; st_size as requested")
def probe_03(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for size in (0x7FFFFFFFFFFFF000, 2**62, 2**40):
        g = create_gmem(sys, rec, vm, size)
        if g is not None:
            rec.call(f"fstat gmem size {size:#x}", sys.fstat, g)
            rec.close(f"close gmem size {size:#x}", g)


@scenario("probe_04_create_gmem_flag_bits", "single flag bits: 0 and 1 succeed, 2..63 -> EINVAL (default VM)")
def probe_04(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for bit in range(64):
        g = create_gmem(sys, rec, vm, P, 1 << bit, label=f"flags=1<<{bit}")
        if g is not None:
            rec.close(f"close flags=1<<{bit}", g)
    g = create_gmem(sys, rec, vm, P, MMAP | INIT_SHARED | 4, label="flags=MMAP|INIT_SHARED|1<<2")


@scenario("probe_05_create_gmem_init_shared_without_mmap", "INIT_SHARED without MMAP is accepted at create")
def probe_05(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, 4 * P, INIT_SHARED)
    if g is not None:
        rec.call("fstat", sys.fstat, g)
        rec.call("fallocate KEEP_SIZE 0..4P", sys.fallocate, g, KEEP, 0, 4 * P)


@scenario("probe_06_create_gmem_reserved_unchecked", "reserved[0]=1 and reserved[5]=~0 are not checked in 6.18")
def probe_06(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    create_gmem(sys, rec, vm, P, 0, label="reserved[0]=1", reserved={0: 1})
    create_gmem(sys, rec, vm, P, 0, label="reserved[5]=~0", reserved={5: 2**64 - 1})
    create_gmem(sys, rec, vm, P, MMAP, label="MMAP, all reserved ~0", reserved={i: 2**64 - 1 for i in range(6)})


@scenario("probe_07_null_argument", "KVM_CREATE_GUEST_MEMFD(NULL) and KVM_SET_USER_MEMORY_REGION2(NULL) -> EFAULT")
def probe_07(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    rec.call("KVM_CREATE_GUEST_MEMFD(NULL)", sys.ioctl, vm, K.KVM_CREATE_GUEST_MEMFD, 0)
    rec.call("KVM_SET_USER_MEMORY_REGION2(NULL)", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2, 0)
    rec.call("KVM_SET_USER_MEMORY_REGION(NULL)", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, 0)


@scenario("probe_08_create_gmem_on_dev_kvm", "KVM_CREATE_GUEST_MEMFD on the /dev/kvm fd -> EINVAL")
def probe_08(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("KVM_CREATE_GUEST_MEMFD on /dev/kvm", sys.ioctl, kvm, K.KVM_CREATE_GUEST_MEMFD, gmem_args(P))
    rec.call("KVM_SET_USER_MEMORY_REGION2 on /dev/kvm", sys.ioctl, kvm, K.KVM_SET_USER_MEMORY_REGION2, region2(0, 0, P))


@scenario("probe_09_eio_from_forked_child",
          "from a forked child: VM ioctls -> EIO; /dev/kvm ioctls and fallocate on a gmem fd still work")
def probe_09(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, 4 * P)
    rec.child("child: KVM_CREATE_GUEST_MEMFD on the VM fd",
              lambda s: s.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, gmem_args(P)))
    rec.child("child: KVM_CHECK_EXTENSION(GUEST_MEMFD) on the VM fd",
              lambda s: s.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD))
    rec.child("child: KVM_SET_USER_MEMORY_REGION2 on the VM fd",
              lambda s: s.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region2(1, 0, P, g, 0)))
    rec.child("child: KVM_GET_API_VERSION on /dev/kvm",
              lambda s: s.ioctl(kvm, K.KVM_GET_API_VERSION, 0))
    rec.child("child: KVM_CHECK_EXTENSION(GUEST_MEMFD) on /dev/kvm",
              lambda s: s.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD))
    rec.child("child: fallocate KEEP_SIZE 0..4P on gmem", lambda s: s.fallocate(g, KEEP, 0, 4 * P))
    rec.child("child: fallocate KEEP_SIZE|PUNCH_HOLE P..2P on gmem", lambda s: s.fallocate(g, KEEP | PUNCH, P, P))
    rec.child("child: several steps", lambda s: (
        outcome_of(s.ioctl, kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0),
        outcome_of(s.ioctl, vm, K.KVM_CREATE_VCPU, 0),
        outcome_of(s.fstat, g),
        outcome_of(s.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2, region2(1, 0, 0, 0, 0, 0)),
    ))
    # the parent is unaffected
    create_gmem(sys, rec, vm, P, label="parent: KVM_CREATE_GUEST_MEMFD after the child ran")
    set_region2(sys, rec, vm, "parent: bind gmem [0,P) slot 1", 1, 0, P, g, 0)


@scenario("probe_10_fallocate_mode0", "fallocate mode 0 (no KEEP_SIZE) -> EOPNOTSUPP")
def probe_10(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    rec.call("fallocate mode 0, 0..4P", sys.fallocate, g, 0, 0, 4 * P)
    rec.call("fallocate mode 0, 0..P", sys.fallocate, g, 0, 0, P)


@scenario("probe_11_fallocate_punch_without_keep_size", "PUNCH_HOLE without KEEP_SIZE -> EOPNOTSUPP")
def probe_11(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    rec.call("fallocate PUNCH_HOLE 0..P", sys.fallocate, g, PUNCH, 0, P)


@scenario("probe_12_fallocate_punch_unaligned", "KEEP_SIZE|PUNCH_HOLE off=P-1 len=P and off=P len=P-1 -> EINVAL")
def probe_12(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    rec.call("punch off=P-1 len=P", sys.fallocate, g, KEEP | PUNCH, P - 1, P)
    rec.call("punch off=P len=P-1", sys.fallocate, g, KEEP | PUNCH, P, P - 1)


@scenario("probe_13_fallocate_past_eof", "fallocate KEEP_SIZE past EOF -> EINVAL")
def probe_13(sys, rec):
    T = 4 * P
    _, _, g = vm_with_gmem(sys, rec, T)
    rec.call("KEEP_SIZE 0..T+P", sys.fallocate, g, KEEP, 0, T + P)
    rec.call("KEEP_SIZE off=T len=P", sys.fallocate, g, KEEP, T, P)
    rec.call("KEEP_SIZE off=T+P len=P", sys.fallocate, g, KEEP, T + P, P)
    rec.call("KEEP_SIZE 0..T", sys.fallocate, g, KEEP, 0, T)


@scenario("probe_14_fallocate_punch_at_or_after_eof", "KEEP_SIZE|PUNCH_HOLE at or after EOF -> 0")
def probe_14(sys, rec):
    T = 4 * P
    _, _, g = vm_with_gmem(sys, rec, T)
    rec.call("punch off=T len=P", sys.fallocate, g, KEEP | PUNCH, T, P)
    rec.call("punch off=T+P len=P", sys.fallocate, g, KEEP | PUNCH, T + P, P)
    rec.call("punch off=3P len=4P (straddles EOF)", sys.fallocate, g, KEEP | PUNCH, 3 * P, 4 * P)
    rec.call("fstat", sys.fstat, g)


@scenario("probe_15_fallocate_efbig", "fallocate off=2^62 len=2^62 -> EFBIG")
def probe_15(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    rec.call("KEEP_SIZE off=2^62 len=2^62", sys.fallocate, g, KEEP, 2**62, 2**62)
    rec.call("KEEP_SIZE|PUNCH off=2^62 len=2^62", sys.fallocate, g, KEEP | PUNCH, 2**62, 2**62)


@scenario("probe_16_mmap_without_mmap_flag", "mmap of a gmem without MMAP (flags 0, INIT_SHARED only) -> ENODEV")
def probe_16(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g0 = create_gmem(sys, rec, vm, 4 * P, 0)
    rec.call("flags 0: mmap MAP_SHARED RW", sys.mmap, g0, 4 * P, PROT_RW, MAP_SHARED)
    rec.call("flags 0: mmap MAP_SHARED R", sys.mmap, g0, 4 * P, PROT_READ, MAP_SHARED)
    rec.call("flags 0: mmap MAP_PRIVATE RW", sys.mmap, g0, 4 * P, PROT_RW, MAP_PRIVATE)
    rec.call("flags 0: mmap P MAP_SHARED RW", sys.mmap, g0, P, PROT_RW, MAP_SHARED)
    gi = create_gmem(sys, rec, vm, 4 * P, INIT_SHARED)
    rec.call("INIT_SHARED only: mmap MAP_SHARED RW", sys.mmap, gi, 4 * P, PROT_RW, MAP_SHARED)


@scenario("probe_17_mmap_private", "MAP_PRIVATE of an MMAP gmem (with or without INIT_SHARED) -> EINVAL")
def probe_17(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for flags in (MMAP, MMAP | INIT_SHARED):
        g = create_gmem(sys, rec, vm, 4 * P, flags)
        rec.call(f"flags {flags:#x}: mmap MAP_PRIVATE RW", sys.mmap, g, 4 * P, PROT_RW, MAP_PRIVATE)
        rec.call(f"flags {flags:#x}: mmap MAP_PRIVATE R", sys.mmap, g, 4 * P, PROT_READ, MAP_PRIVATE)


@scenario("probe_18_sigbus_private", "access to an mmap of MMAP-without-INIT_SHARED -> SIGBUS, even after fallocate")
def probe_18(sys, rec):
    _, _, g = vm_with_gmem(sys, rec, 4 * P, MMAP)
    m = rec.call("mmap 4P MAP_SHARED RW", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    if m is None:
        return
    rec.access("read m[0]", m, 0)
    rec.access("read m[2P+5]", m, 2 * P + 5)
    rec.access("write m[0]=0xaa", m, 0, 0xAA)
    rec.access("write m[0:4P]", m, slice(0, 4 * P), b"\xaa" * (4 * P))
    rec.call("fallocate KEEP_SIZE 0..4P", sys.fallocate, g, KEEP, 0, 4 * P)
    rec.access("read m[0] after fallocate", m, 0)
    rec.access("read m[P:2P] after fallocate", m, slice(P, 2 * P))
    rec.access("write m[3P] after fallocate", m, 3 * P, 1)


@scenario("probe_19_sigbus_beyond_eof", "MMAP|INIT_SHARED: access beyond EOF -> SIGBUS; mmap at offset >= size succeeds")
def probe_19(sys, rec):
    size = P
    _, _, g = vm_with_gmem(sys, rec, size, MMAP | INIT_SHARED)
    m = rec.call("mmap 4*size", sys.mmap, g, 4 * size, PROT_RW, MAP_SHARED)
    if m is not None:
        rec.access("read size-1", m, size - 1)
        rec.access("read size", m, size)
        rec.access("read 4*size-1", m, 4 * size - 1)
        rec.access("write [size-2:size+2]", m, slice(size - 2, size + 2), b"\x01\x02\x03\x04")
        rec.access("read [size-4:size]", m, slice(size - 4, size))
    m2 = rec.call("mmap P at file offset = size", sys.mmap, g, P, PROT_RW, MAP_SHARED, size)
    if m2 is not None:
        rec.access("read m2[0]", m2, 0)
    m3 = rec.call("mmap P at file offset = 8*size", sys.mmap, g, P, PROT_RW, MAP_SHARED, 8 * size)
    if m3 is not None:
        rec.access("write m3[0]", m3, 0, 7)
    rec.call("mmap at unaligned file offset 100", sys.mmap, g, P, PROT_RW, MAP_SHARED, 100)


@scenario("probe_20_read_write", "read / write on a gmem fd -> EINVAL")
def probe_20(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    rec.call("read 64", sys.read, g, 64)
    rec.call("read 0", sys.read, g, 0)
    rec.call("write 64", sys.write, g, b"\0" * 64)
    rec.call("write 0", sys.write, g, b"")


@scenario("probe_21_pread_pwrite_lseek", "pread / pwrite / lseek on a gmem fd -> ESPIPE")
def probe_21(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    rec.call("pread 64 @0", sys.pread, g, 64, 0)
    rec.call("pwrite 64 @0", sys.pwrite, g, b"\0" * 64, 0)
    for how, name in ((os.SEEK_SET, "SET"), (os.SEEK_CUR, "CUR"), (os.SEEK_END, "END"),
                      (os.SEEK_DATA, "DATA"), (os.SEEK_HOLE, "HOLE")):
        rec.call(f"lseek 0 SEEK_{name}", sys.lseek, g, 0, how)


@scenario("probe_22_ftruncate_fchmod_fsync", "ftruncate (any size) / fchmod / fsync -> EINVAL; size immutable")
def probe_22(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    for size in (4 * P, 8 * P, P, 0):
        rec.call(f"ftruncate {size:#x}", sys.ftruncate, g, size)
    rec.call("fchmod 0o644", sys.fchmod, g, 0o644)
    rec.call("fchmod 0o600", sys.fchmod, g, 0o600)
    rec.call("fsync", sys.fsync, g)
    rec.call("fstat (size unchanged)", sys.fstat, g)


@scenario("probe_23_ioctl_on_gmem", "any ioctl on a gmem fd -> ENOTTY")
def probe_23(sys, rec):
    _, _, g = vm_with_gmem(sys, rec)
    rec.call("KVM_GET_API_VERSION on gmem", sys.ioctl, g, K.KVM_GET_API_VERSION, 0)
    rec.call("KVM_CHECK_EXTENSION on gmem", sys.ioctl, g, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD)
    rec.call("KVM_CREATE_GUEST_MEMFD on gmem", sys.ioctl, g, K.KVM_CREATE_GUEST_MEMFD, gmem_args(P))
    rec.call("KVM_SET_USER_MEMORY_REGION2 on gmem", sys.ioctl, g, K.KVM_SET_USER_MEMORY_REGION2, region2(0, 0, P))
    rec.call("ioctl 0 on gmem", sys.ioctl, g, 0, 0)
    rec.call("FIONREAD-like 0x541B on gmem", sys.ioctl, g, 0x541B, bytes(4))


@scenario("probe_24_bind_same_range_twice", "the same gmem range bound to a second slot (different GPA) -> EINVAL")
def probe_24(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "slot 1 gpa 0 [0,4P)", 1, 0, 4 * P, g, 0)
    set_region2(sys, rec, vm, "slot 2 gpa 1G [0,4P)", 2, 1 << 30, 4 * P, g, 0)
    set_region2(sys, rec, vm, "slot 2 gpa 1G [0,P)", 2, 1 << 30, P, g, 0)


@scenario("probe_25_bind_partial_overlap", "partially overlapping gmem range -> EINVAL; adjacent -> 0")
def probe_25(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 8 * P)
    set_region2(sys, rec, vm, "slot 1 gpa 0 [0,4P)", 1, 0, 4 * P, g, 0)
    set_region2(sys, rec, vm, "slot 2 [2P,6P)", 2, 1 << 30, 4 * P, g, 2 * P)
    set_region2(sys, rec, vm, "slot 2 [3P,5P) (last page overlaps)", 2, 1 << 30, 2 * P, g, 3 * P)
    set_region2(sys, rec, vm, "slot 2 [4P,8P) (adjacent)", 2, 1 << 30, 4 * P, g, 4 * P)


@scenario("probe_26_bind_misaligned_offset", "guest_memfd_offset 1, 2048 -> EINVAL")
def probe_26(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "offset 1", 1, 0, P, g, 1)
    set_region2(sys, rec, vm, "offset 2048", 1, 0, P, g, 2048)
    set_region2(sys, rec, vm, "offset P-1", 1, 0, P, g, P - 1)
    set_region2(sys, rec, vm, "offset P", 1, 0, P, g, P)


@scenario("probe_27_bind_gpa_overlap", "bind with a GPA range overlapping another memslot -> EEXIST")
def probe_27(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 8 * P)
    set_region2(sys, rec, vm, "slot 1 gpa 0x100000 [0,2P)", 1, 0x100000, 2 * P, g, 0)
    set_region2(sys, rec, vm, "slot 2 gpa 0x101000 [4P,6P) (gpa overlap)", 2, 0x101000, 2 * P, g, 4 * P)
    set_region2(sys, rec, vm, "slot 2 gpa 0x0ff000 [4P,6P) (gpa overlap)", 2, 0x0FF000, 2 * P, g, 4 * P)
    set_region2(sys, rec, vm, "slot 2 gpa 0x101000 [0,2P) (gpa and gmem overlap)", 2, 0x101000, 2 * P, g, 0)
    set_region2(sys, rec, vm, "slot 2 plain gpa 0x100000", 2, 0x100000, P, 0, 0, 0)
    set_region2(sys, rec, vm, "slot 2 gpa 0x102000 [4P,6P) (adjacent)", 2, 0x102000, 2 * P, g, 4 * P)


@scenario("probe_28_bind_non_gmem_fd", "guest_memfd = /dev/null, a regular file, the VM fd, the /dev/kvm fd -> EINVAL")
def probe_28(sys, rec):
    kvm, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "guest_memfd=VM fd", 1, 0, P, vm, 0)
    set_region2(sys, rec, vm, "guest_memfd=/dev/kvm fd", 1, 0, P, kvm, 0)
    null = rec.call("open /dev/null", sys.open, "/dev/null", os.O_RDWR)
    if null is not None:
        set_region2(sys, rec, vm, "guest_memfd=/dev/null", 1, 0, P, null, 0)
    tmp = rec.call("open O_TMPFILE regular file", sys.open, "/tmp", os.O_TMPFILE | os.O_RDWR, 0o600)
    if tmp is not None:
        rec.call("ftruncate regular file 4P", sys.ftruncate, tmp, 4 * P)
        set_region2(sys, rec, vm, "guest_memfd=regular file", 1, 0, P, tmp, 0)
    set_region2(sys, rec, vm, "guest_memfd=gmem (control)", 1, 0, P, g, 0)


@scenario("probe_29_bind_bad_fd", "guest_memfd = an unopened fd (9999) / 0xffffffff -> EBADF")
def probe_29(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "guest_memfd=9999", 1, 0, P, 9999, 0)
    set_region2(sys, rec, vm, "guest_memfd=0xffffffff", 1, 0, P, 0xFFFFFFFF, 0)
    rec.close("close gmem", g)
    set_region2(sys, rec, vm, "guest_memfd=closed gmem fd", 1, 0, P, g, 0)


@scenario("probe_30_bind_other_vms_gmem", "another VM's gmem -> EINVAL, also after that VM's fd is closed")
def probe_30(sys, rec):
    kvm = open_kvm(sys, rec)
    vm_a = create_vm(sys, rec, kvm, label="create VM A")
    vm_b = create_vm(sys, rec, kvm, label="create VM B")
    g = create_gmem(sys, rec, vm_a, 4 * P, label="gmem of VM A")
    set_region2(sys, rec, vm_b, "bind VM A's gmem into VM B", 1, 0, P, g, 0)
    rec.close("close VM A", vm_a)
    set_region2(sys, rec, vm_b, "bind VM A's gmem into VM B after VM A closed", 1, 0, P, g, 0)
    g2 = create_gmem(sys, rec, vm_b, 4 * P, label="gmem of VM B")
    set_region2(sys, rec, vm_b, "bind VM B's own gmem (control)", 1, 0, P, g2, 0)


@scenario("probe_31_bind_beyond_file", "offset+size > file size; offset == size; offset 2^62 / 2^64-P / 2^63 -> EINVAL")
def probe_31(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "offset 3P size 2P", 1, 0, 2 * P, g, 3 * P)
    set_region2(sys, rec, vm, "offset 0 size 5P", 1, 0, 5 * P, g, 0)
    set_region2(sys, rec, vm, "offset == size (4P), size P", 1, 0, P, g, 4 * P)
    set_region2(sys, rec, vm, "offset 2^62", 1, 0, P, g, 2**62)
    set_region2(sys, rec, vm, "offset 2^64-P (u64 overflow)", 1, 0, P, g, 2**64 - P)
    set_region2(sys, rec, vm, "offset 2^63 (negative loff_t)", 1, 0, P, g, 2**63)
    set_region2(sys, rec, vm, "offset 3P size P (last page, control)", 1, 0, P, g, 3 * P)


@scenario("probe_32_bind_loff_overflow_bug", "offset 0x7ffffffffffff000 size P -> 0 (6.18 bug, fixed later)")
def probe_32(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "offset 0x7ffffffffffff000 size P", 1, 0, P, g, 0x7FFFFFFFFFFFF000)
    set_region2(sys, rec, vm, "offset 0x7fffffffffffe000 size P", 2, 1 << 30, P, g, 0x7FFFFFFFFFFFE000)
    delete_slot(sys, rec, vm, 1)
    delete_slot(sys, rec, vm, 2)


@scenario("probe_33_gmem_flag_combinations", "GUEST_MEMFD|READONLY and GUEST_MEMFD|LOG_DIRTY_PAGES -> EINVAL")
def probe_33(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "GUEST_MEMFD|READONLY", 1, 0, P, g, 0, K.KVM_MEM_GUEST_MEMFD | K.KVM_MEM_READONLY)
    set_region2(sys, rec, vm, "GUEST_MEMFD|LOG_DIRTY_PAGES", 1, 0, P, g, 0,
                K.KVM_MEM_GUEST_MEMFD | K.KVM_MEM_LOG_DIRTY_PAGES)
    set_region2(sys, rec, vm, "GUEST_MEMFD (control)", 1, 0, P, g, 0)


@scenario("probe_34_v1_with_gmem_flag", "v1 KVM_SET_USER_MEMORY_REGION with GUEST_MEMFD -> EINVAL")
def probe_34(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    r = K.kvm_userspace_memory_region(slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=0, memory_size=P)
    rec.call("v1 flags=GUEST_MEMFD", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, r)
    r = K.kvm_userspace_memory_region(slot=1, flags=1 << 3, guest_phys_addr=0, memory_size=P)
    rec.call("v1 flags=1<<3", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, r)
    r = K.kvm_userspace_memory_region(slot=1, flags=0, guest_phys_addr=0, memory_size=P)
    rec.call("v1 flags=0 (control)", sys.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION, r)


@scenario("probe_35_gmem_slot_immutable", "re-set a gmem slot identically / move it / drop GUEST_MEMFD -> EINVAL")
def probe_35(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "create slot 1 gpa 0 [0,2P)", 1, 0, 2 * P, g, 0)
    set_region2(sys, rec, vm, "identical parameters", 1, 0, 2 * P, g, 0)
    set_region2(sys, rec, vm, "move to gpa 1G", 1, 1 << 30, 2 * P, g, 0)
    set_region2(sys, rec, vm, "drop GUEST_MEMFD flag", 1, 0, 2 * P, g, 0, 0)
    delete_slot(sys, rec, vm, 1)


@scenario("probe_36_padding_unchecked", "nonzero pad1 / pad2[0] -> 0")
def probe_36(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "pad1=1", 1, 0, P, g, 0, pad1=1)
    set_region2(sys, rec, vm, "pad2[0]=~0", 2, 1 << 30, P, g, P, pad2_0=2**64 - 1)


def _attrs(address, size, attributes, flags=0):
    return K.kvm_memory_attributes(address=address, size=size, attributes=attributes, flags=flags)


@scenario("probe_37_set_memory_attributes_default_vm",
          "KVM_SET_MEMORY_ATTRIBUTES on a default VM -> ENOTTY [host-specific: config off]")
def probe_37(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    rec.call("attrs=PRIVATE [0,P)", sys.ioctl, vm, K.KVM_SET_MEMORY_ATTRIBUTES,
             _attrs(0, P, K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    rec.call("attrs=0 [0,P)", sys.ioctl, vm, K.KVM_SET_MEMORY_ATTRIBUTES, _attrs(0, P, 0))
    rec.call("size 0", sys.ioctl, vm, K.KVM_SET_MEMORY_ATTRIBUTES, _attrs(0, 0, 0))
    rec.call("flags=1", sys.ioctl, vm, K.KVM_SET_MEMORY_ATTRIBUTES, _attrs(0, P, 0, 1))
    rec.call("KVM_CHECK_EXTENSION(MEMORY_ATTRIBUTES)", sys.ioctl, vm, K.KVM_CHECK_EXTENSION,
             K.KVM_CAP_MEMORY_ATTRIBUTES)


@scenario("probe_38_set_memory_attributes_dev_kvm", "KVM_SET_MEMORY_ATTRIBUTES on /dev/kvm -> EINVAL")
def probe_38(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("attrs=PRIVATE on /dev/kvm", sys.ioctl, kvm, K.KVM_SET_MEMORY_ATTRIBUTES,
             _attrs(0, P, K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
    rec.call("attrs=0 on /dev/kvm", sys.ioctl, kvm, K.KVM_SET_MEMORY_ATTRIBUTES, _attrs(0, P, 0))


@scenario("probe_39_pre_fault_memory",
          "KVM_PRE_FAULT_MEMORY on a vCPU: valid / flags=1 / size=0 / on VM fd -> EOPNOTSUPP / EINVAL / EINVAL / ENOTTY")
def probe_39(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    set_region2(sys, rec, vm, "plain slot 0 gpa 0 size 16P", 0, 0, 16 * P, 0, 0, 0)
    vcpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    r = K.kvm_pre_fault_memory(gpa=0, size=P)
    rec.call("valid gpa 0 size P", sys.ioctl, vcpu, K.KVM_PRE_FAULT_MEMORY, r)
    rec.record("struct after valid call (gpa, size)", (r.gpa, r.size))
    rec.call("flags=1", sys.ioctl, vcpu, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=P, flags=1))
    rec.call("size=0", sys.ioctl, vcpu, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=0))
    rec.call("unaligned gpa", sys.ioctl, vcpu, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=1, size=P))
    rec.call("on the VM fd", sys.ioctl, vm, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=P))
    rec.call("KVM_CHECK_EXTENSION(PRE_FAULT_MEMORY) on VM", sys.ioctl, vm, K.KVM_CHECK_EXTENSION,
             K.KVM_CAP_PRE_FAULT_MEMORY)


@scenario("probe_40_memory_encrypt_op", "KVM_MEMORY_ENCRYPT_OP on a default VM -> ENOTTY")
def probe_40(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    rec.call("KVM_MEMORY_ENCRYPT_OP(NULL)", sys.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, 0)
    rec.call("KVM_MEMORY_ENCRYPT_OP(buf)", sys.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, bytearray(8))


@scenario("probe_41_create_vm_types", "KVM_CREATE_VM type 1..6 -> EINVAL [host-specific]; type 0 -> fd")
def probe_41(sys, rec):
    kvm = open_kvm(sys, rec)
    check_ext(sys, rec, kvm, K.KVM_CAP_VM_TYPES, "/dev/kvm")
    for t in range(0, 7):
        vm = create_vm(sys, rec, kvm, t)
        if vm is not None:
            rec.close(f"close VM type {t}", vm)
    create_vm(sys, rec, kvm, 31)
    create_vm(sys, rec, kvm, 32)


@scenario("probe_42_enable_cap_exit_hypercall",
          "KVM_ENABLE_CAP(EXIT_HYPERCALL) args[0] = 1<<12 / 1<<11 -> 0 / EINVAL; ENABLE_CAP(GUEST_MEMFD_FLAGS) -> EINVAL")
def probe_42(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)

    def cap(c, a0):
        e = K.kvm_enable_cap(cap=c)
        e.args[0] = a0
        return e

    rec.call("EXIT_HYPERCALL args[0]=1<<12", sys.ioctl, vm, K.KVM_ENABLE_CAP, cap(K.KVM_CAP_EXIT_HYPERCALL, 1 << 12))
    rec.call("EXIT_HYPERCALL args[0]=1<<11", sys.ioctl, vm, K.KVM_ENABLE_CAP, cap(K.KVM_CAP_EXIT_HYPERCALL, 1 << 11))
    rec.call("EXIT_HYPERCALL args[0]=0", sys.ioctl, vm, K.KVM_ENABLE_CAP, cap(K.KVM_CAP_EXIT_HYPERCALL, 0))
    rec.call("GUEST_MEMFD_FLAGS args[0]=1", sys.ioctl, vm, K.KVM_ENABLE_CAP, cap(K.KVM_CAP_GUEST_MEMFD_FLAGS, 1))


PROBE_43_CAPS = (231, 232, 233, 234, 235, 236, 244, 201)


@scenario("probe_43_check_extension",
          "KVM_CHECK_EXTENSION 231,232,233,234,235,236,244,201 -> 1,1,0,1,1,0,3,4096 on /dev/kvm and the VM")
def probe_43(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for c in PROBE_43_CAPS:
        check_ext(sys, rec, kvm, c, "/dev/kvm")
        check_ext(sys, rec, vm, c, "VM")


# =====================================================================================
# §4.1-4.6, §5.2: other facts that need no guest code
# =====================================================================================


@scenario("fact_dev_kvm_basics", "API version 12, vCPU mmap size 12288, other capabilities (§2.2, §5.2, §6.3)")
def fact_dev_kvm_basics(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("KVM_GET_API_VERSION", sys.ioctl, kvm, K.KVM_GET_API_VERSION, 0)
    rec.call("KVM_GET_VCPU_MMAP_SIZE", sys.ioctl, kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
    vm = create_vm(sys, rec, kvm)
    for c in (K.KVM_CAP_USER_MEMORY, K.KVM_CAP_NR_MEMSLOTS, K.KVM_CAP_IMMEDIATE_EXIT, K.KVM_CAP_BINARY_STATS_FD,
              245, 246, 247):
        check_ext(sys, rec, kvm, c, "/dev/kvm")
        check_ext(sys, rec, vm, c, "VM")
    rec.call("KVM_CREATE_GUEST_MEMFD on /dev/kvm, bytes arg", sys.ioctl, kvm, K.KVM_CREATE_GUEST_MEMFD, bytes(gmem_args(P)))
    rec.call("unknown ioctl _IO(0xAE,0xff) on VM", sys.ioctl, vm, 0xAEFF, 0)
    rec.call("CREATE_GUEST_MEMFD with wrong size _IOWR(0xAE,0xd4,32)", sys.ioctl, vm, 0xC020AED4, bytes(32))
    rec.call("SET_USER_MEMORY_REGION2 with wrong size _IOW(0xAE,0x49,32)", sys.ioctl, vm, 0x4020AE49, bytes(32))


@scenario("fact_gmem_fstat", "fstat: st_mode 0o100600, st_size, st_blksize 4096, st_blocks 0 always, nlink 1; "
                             "distinct inodes")
def fact_gmem_fstat(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    inos = []
    for flags in (0, MMAP, MMAP | INIT_SHARED):
        g = create_gmem(sys, rec, vm, 4 * P, flags)
        st = rec.call(f"fstat flags {flags:#x}", sys.fstat, g)
        if st is not None:
            inos.append((st.st_dev, st.st_ino))
        rec.call(f"fallocate KEEP_SIZE 0..4P flags {flags:#x}", sys.fallocate, g, KEEP, 0, 4 * P)
        rec.call(f"fstat after fallocate flags {flags:#x}", sys.fstat, g)
        if flags & INIT_SHARED:
            m = rec.call("mmap 4P", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
            if m is not None:
                rec.access("write all 4P", m, slice(0, 4 * P), b"\x5a" * (4 * P))
                rec.call("fstat after faulting through mmap", sys.fstat, g)
    rec.record("all inodes distinct", len(set(inos)) == len(inos) == 3)
    d = rec.call("dup last gmem", sys.dup, g)
    st = rec.call("fstat dup", sys.fstat, d)
    if st is not None and inos:
        rec.record("dup has the same inode", (st.st_dev, st.st_ino) == inos[-1])


@scenario("fact_dup_gmem_binding", "a dup'ed gmem fd is the same file: binding through it works, overlap applies per file")
def fact_dup_gmem_binding(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 8 * P)
    d = rec.call("dup gmem", sys.dup, g)
    set_region2(sys, rec, vm, "bind [0,4P) via dup", 1, 0, 4 * P, d, 0)
    set_region2(sys, rec, vm, "bind [2P,6P) via original (overlap)", 2, 1 << 30, 4 * P, g, 2 * P)
    set_region2(sys, rec, vm, "bind [0,P) via dup (overlap)", 2, 1 << 30, P, d, 0)
    set_region2(sys, rec, vm, "bind [4P,8P) via original", 2, 1 << 30, 4 * P, g, 4 * P)
    rec.close("close original", g)
    rec.call("fallocate via dup after original closed", sys.fallocate, d, KEEP, 0, 8 * P)
    rec.call("fstat via dup", sys.fstat, d)
    delete_slot(sys, rec, vm, 1)
    set_region2(sys, rec, vm, "rebind [0,4P) via dup after delete", 3, 2 << 30, 4 * P, d, 0)


@scenario("fact_gmem_after_vm_close", "after close(vm_fd): fallocate/punch work, mappings keep contents, new mmap "
                                      "works; binding to another VM -> EINVAL")
def fact_gmem_after_vm_close(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, 4 * P, MMAP | INIT_SHARED)
    m = rec.call("mmap 4P", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    rec.access("write 0xaa to all 4P", m, slice(0, 4 * P), b"\xaa" * (4 * P))
    rec.close("close VM fd", vm)
    rec.call("fallocate KEEP_SIZE 0..4P", sys.fallocate, g, KEEP, 0, 4 * P)
    rec.access("read all through the old mapping", m, slice(0, 4 * P))
    rec.call("punch [P,2P)", sys.fallocate, g, KEEP | PUNCH, P, P)
    rec.access("read all through the old mapping after punch", m, slice(0, 4 * P))
    m2 = rec.call("new mmap 4P", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    rec.access("read all through the new mapping", m2, slice(0, 4 * P))
    rec.access("write page 3 through the new mapping", m2, slice(3 * P, 4 * P), b"\x33" * P)
    rec.access("read page 3 through the old mapping", m, slice(3 * P, 4 * P))
    vm2 = create_vm(sys, rec, kvm, label="create another VM")
    set_region2(sys, rec, vm2, "bind the orphaned gmem to the other VM", 1, 0, P, g, 0)
    rec.call("fstat", sys.fstat, g)
    rec.call("mmap MAP_PRIVATE still EINVAL", sys.mmap, g, P, PROT_RW, MAP_PRIVATE)


@scenario("fact_delete_after_gmem_close", "close the gmem fd while bound; the memslot stays and can be deleted -> 0")
def fact_delete_after_gmem_close(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "bind slot 1 [0,4P)", 1, 0, 4 * P, g, 0)
    rec.close("close gmem", g)
    set_region2(sys, rec, vm, "slot 2 overlapping gpa (slot 1 still exists)", 2, 0, P, 0, 0, 0)
    delete_slot(sys, rec, vm, 1)
    delete_slot(sys, rec, vm, 1, "delete slot 1 again")
    set_region2(sys, rec, vm, "plain slot 2 at the freed gpa", 2, 0, P, 0, 0, 0)


@scenario("fact_unbind_frees_range", "deleting a gmem memslot frees the file range for a new binding")
def fact_unbind_frees_range(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "bind slot 1 [0,4P)", 1, 0, 4 * P, g, 0)
    set_region2(sys, rec, vm, "bind slot 2 [0,4P) (bound)", 2, 1 << 30, 4 * P, g, 0)
    delete_slot(sys, rec, vm, 1)
    set_region2(sys, rec, vm, "bind slot 2 [0,4P) after delete", 2, 1 << 30, 4 * P, g, 0)
    set_region2(sys, rec, vm, "re-create slot 1 [0,P) (bound by slot 2)", 1, 0, P, g, 0)
    delete_slot(sys, rec, vm, 2)
    set_region2(sys, rec, vm, "re-create slot 1 [0,P) after deleting slot 2", 1, 0, P, g, 0)


@scenario("fact_data_persistence", "contents persist across memslot deletion, munmap/mmap and VM-fd close")
def fact_data_persistence(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, 4 * P, MMAP | INIT_SHARED)
    m = rec.call("mmap 4P", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    rec.access("read fresh pages (zero)", m, slice(0, 4 * P))
    pattern = bytes(range(256)) * 16
    expected = bytes(P) + pattern + b"\x11" * P + bytes(P)
    rec.access("write pattern to page 1", m, slice(P, 2 * P), pattern)
    rec.access("write 0x11 to page 2", m, slice(2 * P, 3 * P), b"\x11" * P)
    set_region2(sys, rec, vm, "bind slot 1 [0,4P)", 1, 0, 4 * P, g, 0)
    delete_slot(sys, rec, vm, 1)
    v = rec.access("read after memslot deletion", m, slice(0, 4 * P))
    rec.record("contents as written after memslot deletion", v == expected)
    if m is not None:
        rec.call("munmap", m.close)
    rec.access("access after munmap", m, 0)
    m = rec.call("mmap again", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    v = rec.access("read after munmap/mmap", m, slice(0, 4 * P))
    rec.record("contents as written after munmap/mmap", v == expected)
    rec.call("fallocate KEEP_SIZE 0..4P (re-allocate keeps data)", sys.fallocate, g, KEEP, 0, 4 * P)
    v = rec.access("read after re-allocate", m, slice(0, 4 * P))
    rec.record("contents as written after re-allocate", v == expected)
    rec.close("close VM fd", vm)
    v = rec.access("read after VM close", m, slice(0, 4 * P))
    rec.record("contents as written after VM close", v == expected)
    m3 = rec.call("mmap after VM close", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED, 0)
    v = rec.access("read new mapping after VM close", m3, slice(0, 4 * P))
    rec.record("contents as written through a new mapping after VM close", v == expected)


@scenario("fact_two_mappings_share", "two MAP_SHARED mappings of one gmem share contents (one page cache)")
def fact_two_mappings_share(sys, rec):
    _, _, g = vm_with_gmem(sys, rec, 4 * P, MMAP | INIT_SHARED)
    m1 = rec.call("mmap 4P #1", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    m2 = rec.call("mmap 4P #2", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    m3 = rec.call("mmap P at offset 2P #3", sys.mmap, g, P, PROT_RW, MAP_SHARED, 2 * P)
    rec.access("write 0x77 [P,3P) through #1", m1, slice(P, 3 * P), b"\x77" * (2 * P))
    rec.access("read all through #2", m2, slice(0, 4 * P))
    rec.access("read all through #3", m3, slice(0, P))
    rec.access("write m3[10]=0x42", m3, 10, 0x42)
    rec.access("read m1[2P+10]", m1, 2 * P + 10)
    rec.access("read m2[2P+8:2P+12]", m2, slice(2 * P + 8, 2 * P + 12))


@scenario("fact_punch_zeroes_mapping", "PUNCH_HOLE zeroes through an existing mapping; other pages unchanged")
def fact_punch_zeroes_mapping(sys, rec):
    _, _, g = vm_with_gmem(sys, rec, 4 * P, MMAP | INIT_SHARED)
    m = rec.call("mmap 4P", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    rec.access("write 0xaa all", m, slice(0, 4 * P), b"\xaa" * (4 * P))
    rec.call("punch [P,2P)", sys.fallocate, g, KEEP | PUNCH, P, P)
    rec.access("read all", m, slice(0, 4 * P))
    rec.call("punch [2P,4P) + beyond EOF", sys.fallocate, g, KEEP | PUNCH, 2 * P, 8 * P)
    rec.access("read all again", m, slice(0, 4 * P))
    rec.call("re-allocate [P,2P)", sys.fallocate, g, KEEP, P, P)
    rec.access("read page 1 after re-allocate", m, slice(P, 2 * P))
    rec.call("read() while mapped", sys.read, g, 16)


@scenario("fact_punch_and_allocate_while_bound", "fallocate and PUNCH_HOLE on a bound range -> 0; binding unchanged")
def fact_punch_and_allocate_while_bound(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 8 * P, MMAP | INIT_SHARED)
    set_region2(sys, rec, vm, "bind slot 1 [0,4P)", 1, 0, 4 * P, g, 0)
    m = rec.call("mmap 8P", sys.mmap, g, 8 * P, PROT_RW, MAP_SHARED)
    rec.access("write 0x5a all", m, slice(0, 8 * P), b"\x5a" * (8 * P))
    rec.call("fallocate KEEP_SIZE over the bound range", sys.fallocate, g, KEEP, 0, 8 * P)
    rec.call("punch [2P,6P) across the bound range", sys.fallocate, g, KEEP | PUNCH, 2 * P, 4 * P)
    rec.access("read all", m, slice(0, 8 * P))
    set_region2(sys, rec, vm, "bind slot 2 [0,P) (still bound by slot 1)", 2, 1 << 30, P, g, 0)
    set_region2(sys, rec, vm, "bind slot 2 [4P,8P)", 2, 1 << 30, 4 * P, g, 4 * P)
    delete_slot(sys, rec, vm, 1)
    delete_slot(sys, rec, vm, 2)


@scenario("fact_mapping_outlives_fd", "a mapping keeps the gmem file alive after its only fd is closed")
def fact_mapping_outlives_fd(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P, MMAP | INIT_SHARED)
    set_region2(sys, rec, vm, "bind slot 1 [0,4P)", 1, 0, 4 * P, g, 0)
    m = rec.call("mmap 4P", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    rec.access("write 0x66 to page 2", m, slice(2 * P, 3 * P), b"\x66" * P)
    rec.close("close the gmem fd", g)
    rec.access("read all through the mapping", m, slice(0, 4 * P))
    rec.access("write page 0 through the mapping", m, slice(0, 4), b"live")
    rec.access("read back", m, slice(0, 4))
    rec.call("fallocate on the closed fd", sys.fallocate, g, KEEP, 0, P)
    delete_slot(sys, rec, vm, 1)
    rec.call("munmap", m.close)


@scenario("fact_fork_shared_mapping", "a forked child shares MAP_SHARED gmem mappings; private pages SIGBUS there too")
def fact_fork_shared_mapping(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, 4 * P, MMAP | INIT_SHARED)
    gp = create_gmem(sys, rec, vm, 4 * P, MMAP)
    m = rec.call("mmap shared gmem 4P", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED)
    mp = rec.call("mmap private gmem 4P", sys.mmap, gp, 4 * P, PROT_RW, MAP_SHARED)
    rec.access("parent writes 0x10 to page 0", m, slice(0, P), b"\x10" * P)
    if m is None or mp is None:
        return

    def child(s):
        out = [outcome_of(m.__getitem__, slice(0, 8))]
        out.append(outcome_of(m.__setitem__, slice(P, P + 8), b"fromkid!"))
        out.append(outcome_of(mp.__getitem__, 0))
        out.append(outcome_of(s.fallocate, g, KEEP | PUNCH, 3 * P, P))
        return tuple(out)

    rec.child("child: read, write, private read, punch", child)
    rec.access("parent reads page 1 (written by the child)", m, slice(P, P + 8))
    rec.access("parent reads page 0", m, slice(0, 8))


@scenario("fact_fallocate_modes", "the §4.3 fallocate table: len 0, negative offset, unaligned, unsupported modes")
def fact_fallocate_modes(sys, rec):
    T = 4 * P
    _, _, g = vm_with_gmem(sys, rec, T)
    rec.call("KEEP_SIZE len=0", sys.fallocate, g, KEEP, 0, 0)
    rec.call("KEEP_SIZE off=-P", sys.fallocate, g, KEEP, -P, P)
    rec.call("KEEP_SIZE off=0 len=-P", sys.fallocate, g, KEEP, 0, -P)
    rec.call("KEEP_SIZE off=1 len=P", sys.fallocate, g, KEEP, 1, P)
    rec.call("KEEP_SIZE off=0 len=P-1", sys.fallocate, g, KEEP, 0, P - 1)
    rec.call("KEEP_SIZE|PUNCH off=0 len=0", sys.fallocate, g, KEEP | PUNCH, 0, 0)
    for mode, name in ((ZERO, "ZERO_RANGE"), (ZERO | KEEP, "ZERO_RANGE|KEEP"), (COLLAPSE, "COLLAPSE"),
                       (INSERT, "INSERT"), (UNSHARE | KEEP, "UNSHARE|KEEP"), (COLLAPSE | KEEP, "COLLAPSE|KEEP"),
                       (WRITE_ZEROES, "WRITE_ZEROES"), (KEEP | 0x100, "KEEP|0x100"),
                       (KEEP | PUNCH | ZERO, "KEEP|PUNCH|ZERO"), (KEEP | 0x04, "KEEP|NO_HIDE_STALE")):
        rec.call(f"mode {name} 0..P", sys.fallocate, g, mode, 0, P)
    rec.call("KEEP_SIZE|PUNCH P..2P", sys.fallocate, g, KEEP | PUNCH, P, P)
    rec.call("KEEP_SIZE P..2P (re-allocate)", sys.fallocate, g, KEEP, P, P)
    rec.call("KEEP_SIZE 3P..4P (last page)", sys.fallocate, g, KEEP, 3 * P, P)
    rec.call("KEEP_SIZE off=2^63-P len=P", sys.fallocate, g, KEEP, 2**63 - P, P)
    rec.call("KEEP_SIZE off=2^63-P len=2P (overflow)", sys.fallocate, g, KEEP, 2**63 - P, 2 * P)
    rec.call("fstat", sys.fstat, g)


@scenario("fact_mmap_variants", "MMAP|INIT_SHARED: PROT_READ, MAP_SHARED_VALIDATE, MAP_POPULATE succeed; zero-filled")
def fact_mmap_variants(sys, rec):
    _, _, g = vm_with_gmem(sys, rec, 4 * P, MMAP | INIT_SHARED)
    m = rec.call("mmap PROT_READ MAP_SHARED", sys.mmap, g, 4 * P, PROT_READ, MAP_SHARED)
    rec.access("read through PROT_READ mapping", m, slice(0, 4 * P))
    m2 = rec.call("mmap MAP_SHARED_VALIDATE", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED_VALIDATE)
    rec.access("write m2[0:4]", m2, slice(0, 4), b"abcd")
    rec.access("read m[0:8] (PROT_READ mapping)", m, slice(0, 8))
    m3 = rec.call("mmap MAP_SHARED|MAP_POPULATE", sys.mmap, g, 4 * P, PROT_RW, MAP_SHARED | MAP_POPULATE)
    rec.access("read m3[0:8]", m3, slice(0, 8))
    rec.call("mmap length 0", sys.mmap, g, 0, PROT_RW, MAP_SHARED)
    rec.call("mmap unaligned length 100", sys.mmap, g, 100, PROT_RW, MAP_SHARED)
    rec.call("mmap MAP_PRIVATE|MAP_POPULATE", sys.mmap, g, P, PROT_RW, MAP_PRIVATE | MAP_POPULATE)
    rec.call("mmap flags 0 (no type)", sys.mmap, g, P, PROT_RW, 0)


@scenario("fact_memslot_rules", "§4.5: slot limit, flag bits, as_id, uaddr, plain-slot rules, delete rules")
def fact_memslot_rules(sys, rec):
    _, vm, g = vm_with_gmem(sys, rec, 4 * P)
    set_region2(sys, rec, vm, "slot 32764 -> EINVAL", 32764, 0, P, g, 0)
    set_region2(sys, rec, vm, "slot 32763", 32763, 0, P, g, 0)
    set_region2(sys, rec, vm, "flags 1<<3", 1, 1 << 20, P, 0, 0, 1 << 3)
    set_region2(sys, rec, vm, "flags 1<<16", 1, 1 << 20, P, 0, 0, 1 << 16)
    set_region2(sys, rec, vm, "as_id 1 (slot 1|1<<16)", 1 | (1 << 16), 1 << 20, P, g, P)
    set_region2(sys, rec, vm, "uaddr 0xffff800000000000", 1, 1 << 20, P, 0, 0, 0, uaddr=0xFFFF800000000000)
    set_region2(sys, rec, vm, "uaddr unaligned", 1, 1 << 20, P, 0, 0, 0, uaddr=0x1001)
    set_region2(sys, rec, vm, "gpa unaligned", 1, (1 << 20) + 1, P, 0, 0, 0)
    set_region2(sys, rec, vm, "size unaligned", 1, 1 << 20, P + 1, 0, 0, 0)
    set_region2(sys, rec, vm, "gpa+size overflow", 1, 2**64 - P, 2 * P, 0, 0, 0)
    set_region2(sys, rec, vm, "offset+size u64 wrap", 1, 1 << 20, 2 * P, g, 2**64 - P)
    set_region2(sys, rec, vm, "plain LOG_DIRTY|READONLY", 2, 1 << 21, P, 0, 0,
                K.KVM_MEM_LOG_DIRTY_PAGES | K.KVM_MEM_READONLY)
    set_region2(sys, rec, vm, "plain flags 0 with garbage guest_memfd/offset", 3, 1 << 22, P, 0xFFFFFFFF, 12345, 0)
    set_region2(sys, rec, vm, "plain slot 3 identical again", 3, 1 << 22, P, 0xFFFFFFFF, 12345, 0)
    set_region2(sys, rec, vm, "plain slot 3 add GUEST_MEMFD", 3, 1 << 22, P, g, 2 * P)
    set_region2(sys, rec, vm, "plain slot 3 change size", 3, 1 << 22, 2 * P, 0, 0, 0)
    set_region2(sys, rec, vm, "plain slot 3 set LOG_DIRTY (flags only)", 3, 1 << 22, P, 0, 0,
                K.KVM_MEM_LOG_DIRTY_PAGES)
    set_region2(sys, rec, vm, "plain slot 3 toggle READONLY", 3, 1 << 22, P, 0, 0, K.KVM_MEM_READONLY)
    set_region2(sys, rec, vm, "plain slot 3 move gpa", 3, 1 << 23, P, 0, 0, 0)
    set_region2(sys, rec, vm, "plain slot 3 change uaddr", 3, 1 << 23, P, 0, 0, 0, uaddr=0x200000)
    delete_slot(sys, rec, vm, 9, "delete never-created slot 9")
    delete_slot(sys, rec, vm, 3)
    delete_slot(sys, rec, vm, 3, "delete slot 3 twice")
    set_region2(sys, rec, vm, "delete slot 2 with garbage flags/uaddr", 2, 0x1234000, 0, 0, 0,
                K.KVM_MEM_GUEST_MEMFD)
    set_region2(sys, rec, vm, "delete slot 32763 with flags 1<<3", 32763, 0, 0, 0, 0, 1 << 3)
    set_region2(sys, rec, vm, "delete slot 32763 plain", 32763, 0, 0, 0, 0, 0)


# =====================================================================================
# §6.1 guest_memfd_test.c (6.18), the cases that run no guest code
# =====================================================================================


@scenario("selftest_guest_memfd_flags",
          "test_guest_memfd_flags: each single bit succeeds iff the VM's GUEST_MEMFD_FLAGS has it, else EINVAL")
def selftest_guest_memfd_flags(sys, rec):
    kvm = open_kvm(sys, rec)
    seen = set()
    for vm, t, _flags in selftest_combos(sys, rec, kvm):
        if t in seen:
            continue
        seen.add(t)
        cap = sys.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD_FLAGS)
        for bit in range(64):
            flag = 1 << bit
            o = _create_and_close(sys, vm, P, flag)
            expected = ("ok", "fd") if flag & cap else ("errno", "EINVAL")
            rec.outcome(f"[type {t}] flag 1<<{bit}", o)
            rec.record(f"[type {t}] flag 1<<{bit} as the selftest expects", o == expected)


def _create_and_close(sys, vm, size, flags):
    try:
        fd = sys.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, gmem_args(size, flags))
    except OSError as e:
        return ("errno", errname(e.errno))
    sys.close(fd)
    return ("ok", "fd")


@scenario("selftest_create_guest_memfd_multiple",
          "test_create_guest_memfd_multiple: sizes P and 2P, st_size right, distinct st_ino")
def selftest_create_guest_memfd_multiple(sys, rec):
    kvm = open_kvm(sys, rec)
    for vm, t, flags in selftest_combos(sys, rec, kvm):
        tag = f"[type {t} flags {flags:#x}]"
        fd1 = create_gmem(sys, rec, vm, P, 0, label=f"{tag} create P flags 0")
        st1 = rec.call(f"{tag} fstat fd1", sys.fstat, fd1)
        fd2 = create_gmem(sys, rec, vm, 2 * P, 0, label=f"{tag} create 2P flags 0")
        st2 = rec.call(f"{tag} fstat fd2", sys.fstat, fd2)
        st1b = rec.call(f"{tag} fstat fd1 again", sys.fstat, fd1)
        if st1 and st2 and st1b:
            rec.record(f"{tag} st_size P, 2P, P", (st1.st_size == P, st2.st_size == 2 * P, st1b.st_size == P))
            rec.record(f"{tag} st_ino differ", st1.st_ino != st2.st_ino)
        rec.close(f"{tag} close fd1", fd1)
        rec.close(f"{tag} close fd2", fd2)


@scenario("selftest_invalid_sizes", "test_create_guest_memfd_invalid_sizes: size 1..P-1 -> EINVAL, per flags")
def selftest_invalid_sizes(sys, rec):
    kvm = open_kvm(sys, rec)
    for vm, t, flags in selftest_combos(sys, rec, kvm):
        outs = [(size, _create_and_close(sys, vm, size, flags)) for size in range(1, P)]
        rec.runs(f"[type {t} flags {flags:#x}] sizes 1..P-1", outs)
        rec.record(f"[type {t} flags {flags:#x}] all EINVAL", all(o == ("errno", "EINVAL") for _, o in outs))


def _file_read_write(sys, rec, fd, size, tag):
    rec.call(f"{tag} read 64", sys.read, fd, 64)
    rec.call(f"{tag} write 64", sys.write, fd, b"\0" * 64)
    rec.call(f"{tag} pread 64 @0", sys.pread, fd, 64, 0)
    rec.call(f"{tag} pwrite 64 @0", sys.pwrite, fd, b"\0" * 64, 0)


@scenario("selftest_file_read_write", "test_file_read_write: read/write/pread/pwrite of 64 bytes fail")
def selftest_file_read_write(sys, rec):
    gmem_test(sys, rec, lambda f: True, _file_read_write)


def _mmap_supported(sys, rec, fd, size, tag):
    m = rec.call(f"{tag} mmap 4P RW MAP_SHARED", sys.mmap, fd, size, PROT_RW, MAP_SHARED)
    if m is None:
        return
    rec.access(f"{tag} memset 0xaa", m, slice(0, size), b"\xaa" * size)
    rec.access(f"{tag} read all", m, slice(0, size))
    rec.call(f"{tag} fallocate KEEP_SIZE|PUNCH_HOLE 0..P", sys.fallocate, fd, KEEP | PUNCH, 0, P)
    rec.access(f"{tag} read all after punch", m, slice(0, size))
    rec.access(f"{tag} memset page 0 0xaa", m, slice(0, P), b"\xaa" * P)
    rec.access(f"{tag} read all again", m, slice(0, size))
    rec.call(f"{tag} munmap", m.close)


@scenario("selftest_mmap_supported", "test_mmap_supported (MMAP|INIT_SHARED): memset, punch page 0, re-memset")
def selftest_mmap_supported(sys, rec):
    gmem_test(sys, rec, lambda f: f & MMAP and f & INIT_SHARED, _mmap_supported)


def _fault_sigbus(sys, rec, fd, accessible, map_size, tag):
    m = rec.call(f"{tag} mmap {map_size:#x}", sys.mmap, fd, map_size, PROT_RW, MAP_SHARED)
    if m is None:
        return
    rec.access(f"{tag} memset 0xaa whole mapping (expect SIGBUS)", m, slice(0, map_size), b"\xaa" * map_size)
    rec.access(f"{tag} READ_ONCE(mem[{accessible:#x}]) (expect SIGBUS)", m, accessible)
    if accessible:
        rec.access(f"{tag} [0,{accessible:#x}) reads 0xaa", m, slice(0, accessible))
    rec.call(f"{tag} munmap", m.close)


@scenario("selftest_fault_overflow", "test_fault_overflow (MMAP|INIT_SHARED): map 16P of a 4P file; SIGBUS at 4P")
def selftest_fault_overflow(sys, rec):
    gmem_test(sys, rec, lambda f: f & MMAP and f & INIT_SHARED,
              lambda s, r, fd, size, tag: _fault_sigbus(s, r, fd, size, 4 * size, tag))


@scenario("selftest_fault_private", "test_fault_private (MMAP only): SIGBUS on the first byte")
def selftest_fault_private(sys, rec):
    gmem_test(sys, rec, lambda f: f & MMAP and not f & INIT_SHARED,
              lambda s, r, fd, size, tag: _fault_sigbus(s, r, fd, 0, size, tag))


@scenario("selftest_mmap_cow", "test_mmap_cow (any MMAP): MAP_PRIVATE fails (EINVAL)")
def selftest_mmap_cow(sys, rec):
    gmem_test(sys, rec, lambda f: f & MMAP,
              lambda s, r, fd, size, tag: r.call(f"{tag} mmap 4P MAP_PRIVATE", s.mmap, fd, size, PROT_RW, MAP_PRIVATE))


def _mmap_not_supported(sys, rec, fd, size, tag):
    rec.call(f"{tag} mmap P MAP_SHARED", sys.mmap, fd, P, PROT_RW, MAP_SHARED)
    rec.call(f"{tag} mmap 4P MAP_SHARED", sys.mmap, fd, size, PROT_RW, MAP_SHARED)


@scenario("selftest_mmap_not_supported", "test_mmap_not_supported (no MMAP): mmap fails (ENODEV)")
def selftest_mmap_not_supported(sys, rec):
    gmem_test(sys, rec, lambda f: not f & MMAP, _mmap_not_supported)


def _file_size(sys, rec, fd, size, tag):
    st = rec.call(f"{tag} fstat", sys.fstat, fd)
    if st is not None:
        rec.record(f"{tag} st_size == 4P, st_blksize == P", (st.st_size == size, st.st_blksize == P))


@scenario("selftest_file_size", "test_file_size: st_size 4P, st_blksize page size")
def selftest_file_size(sys, rec):
    gmem_test(sys, rec, lambda f: True, _file_size)


def _fallocate(sys, rec, fd, size, tag):
    rec.call(f"{tag} KEEP_SIZE 0..4P", sys.fallocate, fd, KEEP, 0, size)
    rec.call(f"{tag} KEEP|PUNCH (P-1, P)", sys.fallocate, fd, KEEP | PUNCH, P - 1, P)
    rec.call(f"{tag} KEEP (4P, P)", sys.fallocate, fd, KEEP, size, P)
    rec.call(f"{tag} KEEP (5P, P)", sys.fallocate, fd, KEEP, size + P, P)
    rec.call(f"{tag} KEEP|PUNCH (4P, P)", sys.fallocate, fd, KEEP | PUNCH, size, P)
    rec.call(f"{tag} KEEP|PUNCH (5P, P)", sys.fallocate, fd, KEEP | PUNCH, size + P, P)
    rec.call(f"{tag} KEEP|PUNCH (P, P-1)", sys.fallocate, fd, KEEP | PUNCH, P, P - 1)
    rec.call(f"{tag} KEEP|PUNCH (P, P)", sys.fallocate, fd, KEEP | PUNCH, P, P)
    rec.call(f"{tag} KEEP (P, P)", sys.fallocate, fd, KEEP, P, P)


@scenario("selftest_fallocate", "test_fallocate: the nine KEEP_SIZE / PUNCH_HOLE cases")
def selftest_fallocate(sys, rec):
    gmem_test(sys, rec, lambda f: True, _fallocate)


INVALID_PUNCH = ((0, 1), (0, P - 1), (0, P + 1), (1, 1), (1, P - 1), (1, P), (1, P + 1),
                 (P, 1), (P, P - 1), (P, P + 1))


def _invalid_punch_hole(sys, rec, fd, size, tag):
    for off, ln in INVALID_PUNCH:
        rec.call(f"{tag} KEEP|PUNCH ({off:#x}, {ln:#x})", sys.fallocate, fd, KEEP | PUNCH, off, ln)


@scenario("selftest_invalid_punch_hole", "test_invalid_punch_hole: ten unaligned (offset, len) -> EINVAL")
def selftest_invalid_punch_hole(sys, rec):
    gmem_test(sys, rec, lambda f: True, _invalid_punch_hole)


# --- /dev/kvm, VM and vCPU file behaviour the mock took from kernel source ----------------------


@scenario("fact_dev_ioctl_args", "/dev/kvm: GET_API_VERSION and GET_VCPU_MMAP_SIZE take no argument; "
          "KVM_GET_SUPPORTED_CPUID's E2BIG protocol; an unknown /dev/kvm ioctl is EINVAL")
def fact_dev_ioctl_args(sys, rec):
    kvm = open_kvm(sys, rec)
    rec.call("KVM_GET_API_VERSION 0", sys.ioctl, kvm, K.KVM_GET_API_VERSION, 0)
    rec.call("KVM_GET_API_VERSION 1", sys.ioctl, kvm, K.KVM_GET_API_VERSION, 1)
    rec.call("KVM_GET_VCPU_MMAP_SIZE 0", sys.ioctl, kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
    rec.call("KVM_GET_VCPU_MMAP_SIZE 1", sys.ioctl, kvm, K.KVM_GET_VCPU_MMAP_SIZE, 1)
    esize = ctypes.sizeof(K.kvm_cpuid_entry2)
    for nent in (0, 1):
        buf = bytearray(8 + max(nent, 1) * esize)
        buf[0:4] = nent.to_bytes(4, "little")
        rec.call(f"KVM_GET_SUPPORTED_CPUID nent={nent}", sys.ioctl, kvm, K.KVM_GET_SUPPORTED_CPUID, buf)
        rec.record(f"nent after nent={nent}", int.from_bytes(buf[0:4], "little"))
    buf = bytearray(8 + 256 * esize)
    buf[0:4] = (256).to_bytes(4, "little")
    rec.call("KVM_GET_SUPPORTED_CPUID nent=256", sys.ioctl, kvm, K.KVM_GET_SUPPORTED_CPUID, buf)
    nent = int.from_bytes(buf[0:4], "little")
    entries = [K.kvm_cpuid_entry2.from_buffer_copy(buf, 8 + i * esize) for i in range(nent)]
    # Per-CPU fields (APIC ids) change with the CPU that answers, even on the real kernel:
    # compare which leaves exist and the ones VMMs probe (max leaves, address widths).
    rec.record("leaves returned", [(e.function, e.index, e.flags) for e in entries])
    rec.record("leaves 0, 0x80000000, 0x80000008",
               [(e.eax, e.ebx, e.ecx, e.edx) for e in entries
                if e.function in (0, 0x80000000, 0x80000008)])
    rec.call("KVM_GET_SUPPORTED_CPUID(NULL)", sys.ioctl, kvm, K.KVM_GET_SUPPORTED_CPUID, 0)
    rec.call("unknown _IO(0xAE, 0x3f)", sys.ioctl, kvm, 0xAE3F, 0)


@scenario("fact_vcpu_ioctls", "KVM_CREATE_VCPU ids, the kvm_run mapping, immediate_exit, "
          "unknown and ENABLE_CAP ioctls on a vCPU fd")
def fact_vcpu_ioctls(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    max_id = sys.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MAX_VCPU_ID)
    vcpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    rec.call("KVM_CREATE_VCPU 0 again", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    rec.call("KVM_CREATE_VCPU max_vcpu_id", sys.ioctl, vm, K.KVM_CREATE_VCPU, max_id)
    rec.call("KVM_CREATE_VCPU max_vcpu_id-1", sys.ioctl, vm, K.KVM_CREATE_VCPU, max_id - 1)
    m = rec.call("mmap vcpu 4 pages", sys.mmap, vcpu, 4 * P, 3, 1, 0)
    if m is not None:
        rec.access("kvm_run[0:8] (request_interrupt_window, immediate_exit)", m, slice(0, 8))
        rec.access("page 3 (past KVM_GET_VCPU_MMAP_SIZE)", m, 3 * P)
        m[1] = 1  # immediate_exit
        rec.call("KVM_RUN with immediate_exit", sys.ioctl, vcpu, K.KVM_RUN, 0)
        rec.access("exit_reason", m, slice(8, 12))
    rec.call("mmap vcpu at page offset 1", sys.mmap, vcpu, P, 3, 1, P)
    rec.call("unknown _IO(0xAE, 0x3f) on vCPU", sys.ioctl, vcpu, 0xAE3F, 0)
    rec.call("KVM_ENABLE_CAP(EXIT_HYPERCALL) on vCPU", sys.ioctl, vcpu, K.KVM_ENABLE_CAP,
             K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL, args=(1 << 12,)))
    rec.call("KVM_ENABLE_CAP(EXIT_HYPERCALL) flags=1 on VM", sys.ioctl, vm, K.KVM_ENABLE_CAP,
             K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL, flags=1, args=(1 << 12,)))
    rec.call("KVM_ENABLE_CAP(GUEST_MEMFD_FLAGS) on VM", sys.ioctl, vm, K.KVM_ENABLE_CAP,
             K.kvm_enable_cap(cap=K.KVM_CAP_GUEST_MEMFD_FLAGS))


@scenario("fact_kvm_file_ops", "read/write/pread/lseek/ftruncate/fsync/fallocate/fstat on /dev/kvm, "
          "VM and vCPU fds; a negative pread/pwrite offset and a whence beyond SEEK_MAX")
def fact_kvm_file_ops(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    vcpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    for name, fd in (("/dev/kvm", kvm), ("VM", vm), ("vCPU", vcpu)):
        rec.call(f"read {name}", sys.read, fd, 16)
        rec.call(f"write {name}", sys.write, fd, b"x")
        rec.call(f"pread {name}", sys.pread, fd, 16, 0)
        rec.call(f"lseek {name} SEEK_SET 5", sys.lseek, fd, 5, os.SEEK_SET)
        rec.call(f"lseek {name} SEEK_CUR 0", sys.lseek, fd, 0, os.SEEK_CUR)
        rec.call(f"pread {name} at offset -1", sys.pread, fd, 16, -1)
        rec.call(f"pwrite {name} at offset -1", sys.pwrite, fd, b"x", -1)
        rec.call(f"lseek {name} whence 5", sys.lseek, fd, 0, 5)
        rec.call(f"ftruncate {name}", sys.ftruncate, fd, 0)
        rec.call(f"fsync {name}", sys.fsync, fd)
        rec.call(f"fallocate {name}", sys.fallocate, fd, 0, 0, P)
        rec.call(f"fstat {name}", sys.fstat, fd)


# --- the MMU root and the host's paging mode ---------------------------------------------


def _pre_fault(sys, rec, vcpu, label, gpa=0, size=P, flags=0):
    r = K.kvm_pre_fault_memory(gpa=gpa, size=size, flags=flags)
    rec.call(label, sys.ioctl, vcpu, K.KVM_PRE_FAULT_MEMORY, r)
    return r


@scenario("fact_pre_fault_mmu_root",
          "KVM_PRE_FAULT_MEMORY before and after the VM's first memslot: the generic checks "
          "(EINVAL) come first, then kvm_mmu_reload (ENOSPC while a shadow-MMU VM has no "
          "memslot), then the TDP check (EOPNOTSUPP on shadow paging) or the fault (ENOENT)")
def fact_pre_fault_mmu_root(sys, rec):
    kvm = open_kvm(sys, rec)
    check_ext(sys, rec, kvm, K.KVM_CAP_PRE_FAULT_MEMORY, "/dev/kvm")
    vm = create_vm(sys, rec, kvm)
    vcpu = rec.call("KVM_CREATE_VCPU 0 (no memslot yet)", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    r = _pre_fault(sys, rec, vcpu, "no memslot: gpa 0 size P")
    rec.record("struct after (gpa, size)", (r.gpa, r.size))
    _pre_fault(sys, rec, vcpu, "no memslot: flags=1", flags=1)
    _pre_fault(sys, rec, vcpu, "no memslot: size 0", size=0)
    _pre_fault(sys, rec, vcpu, "no memslot: unaligned size", size=P + 1)
    _pre_fault(sys, rec, vcpu, "no memslot: gpa + size wraps", gpa=(1 << 64) - P, size=2 * P)
    _pre_fault(sys, rec, vcpu, "no memslot: size 1 TiB", size=1 << 40)
    rec.call("on the VM fd", sys.ioctl, vm, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=P))
    set_region2(sys, rec, vm, "plain slot 0 gpa 1M size 16P", 0, 1 << 20, 16 * P, 0, 0, 0)
    r = _pre_fault(sys, rec, vcpu, "vCPU 0, inside slot 0", gpa=1 << 20)
    rec.record("struct after (gpa, size)", (r.gpa, r.size))
    _pre_fault(sys, rec, vcpu, "vCPU 0, outside any memslot", gpa=1 << 30)
    vcpu1 = rec.call("KVM_CREATE_VCPU 1 (after the memslot)", sys.ioctl, vm, K.KVM_CREATE_VCPU, 1)
    _pre_fault(sys, rec, vcpu1, "vCPU 1, inside slot 0", gpa=1 << 20)
    delete_slot(sys, rec, vm, 0)
    _pre_fault(sys, rec, vcpu, "vCPU 0 after the memslot is deleted", gpa=1 << 20)
    _pre_fault(sys, rec, vcpu1, "vCPU 1 after the memslot is deleted", gpa=1 << 20)


@scenario("fact_run_mmu_root",
          "KVM_RUN of a vCPU whose VM has no memslot: immediate_exit (EINTR) is checked "
          "before the MMU is loaded; on a shadow-MMU host the load fails with ENOSPC")
def fact_run_mmu_root(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    vcpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    m = rec.call("mmap vcpu 1 page", sys.mmap, vcpu, P, 3, 1, 0)
    if m is None:
        return
    m[1] = 1  # immediate_exit
    rec.call("KVM_RUN with immediate_exit", sys.ioctl, vcpu, K.KVM_RUN, 0)
    rec.access("exit_reason", m, slice(8, 12))
    _pre_fault(sys, rec, vcpu, "KVM_PRE_FAULT_MEMORY gpa 0 size P")
    if rec.steps[-1][1] != ("errno", "ENOSPC"):
        # A TDP-MMU host would enter the guest here, with no memory: not a conformance step.
        rec.record("the MMU root comes from the TDP MMU: KVM_RUN not tried", True)
        return
    m[1] = 0
    rec.call("KVM_RUN", sys.ioctl, vcpu, K.KVM_RUN, 0)
    rec.call("KVM_RUN again", sys.ioctl, vcpu, K.KVM_RUN, 0)
    rec.access("exit_reason", m, slice(8, 12))


# the scenarios of other modules register themselves here
from . import conformance_stats, conformance_vcpu, conformance_x86_mce, conformance_x86_vm  # noqa: E402,F401,I001
from . import conformance_eventfds  # noqa: E402,F401
from . import conformance_x86_vcpu_misc  # noqa: E402,F401
from . import conformance_x86_devices  # noqa: E402,F401
from . import conformance_x86_vm_misc  # noqa: E402,F401
from . import conformance_sweep  # noqa: E402,F401
from . import conformance_dirty_ring  # noqa: E402,F401
from . import conformance_x86_paging  # noqa: E402,F401
from . import conformance_x86_lapic  # noqa: E402,F401
from . import conformance_gmem_fops  # noqa: E402,F401
from . import conformance_x86_pit  # noqa: E402,F401
from . import conformance_fd_syscalls  # noqa: E402,F401
