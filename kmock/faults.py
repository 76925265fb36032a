"""Fault injection: make the Nth call of an ioctl, or a named failure point, fail.

``kernel.faults`` (one ``Faults`` per Kernel) is the kernel's fault-injection
framework (Documentation/fault-injection/fault-injection.rst): the code that
allocates, takes a reference or copies to user space asks it whether to fail::

    kernel.faults.check("gmem.create", errno.ENOMEM)    # raises OSError when chosen

Plugins call the same API at their firmware points (``"tdx.seamcall.mem_page_aug"``,
``"snp.rmpupdate"``, ``"cca.rmi.data_create"``); a point is any dotted name, and the
errno is what the kernel returns when that step fails. ``should_fail(point,
errno)`` returns the errno (0: go on) for code that reports failure another way
(a firmware status).

Choosing what fails, from a test::

    k.faults.fail("kvm.memslot.alloc")               # the next memslot allocation: ENOMEM
    k.faults.fail("ioctl.KVM_CREATE_VCPU", nth=2, errno=errno.EMFILE)
    k.faults.fail_nth(3)    # the 3rd failure-point hit of any kind (fail-nth), its own errno
    k.faults.clear()

``ioctl.NAME`` (the UAPI name of the request) and ``syscall.NAME`` (``open``,
``mmap``, ``fallocate``, ...) fail a whole call before it reaches the mock; they
are counted only while such a rule is armed, through the ``kmock_syscall`` path,
so nothing is added to a syscall when no rule is armed. Internal points cost one
attribute test when nothing is armed.

``fail_nth(n)`` counts every internal point hit in order from the moment it is
armed, as /proc/self/task/<tid>/fail-nth counts every should_fail() of a task; the
sweep built on it is :func:`kmock.testing.fail_nth.sweep`. ``hits`` lists the
points reached (with ``record=True``) and ``injected`` the failures made.

The core's points (``CORE_POINTS``) are the kernel's allocation points, the safe
refcount check of a to-private conversion and the copy_to_user write-back.
kmock.kernel_util's copy_to_user has no kernel at hand: while a Faults is armed it
is asked by every kmock Kernel of the process, so arm one kernel at a time (the
sweep does; ``Kernel.close_all`` disarms).
"""

import errno as _errno
import os
import threading
import weakref

#: failure points in the core: name -> (errno, the kernel step it stands for)
CORE_POINTS = {
    "gmem.create": (_errno.ENOMEM, "kvm_gmem_create: the inode and file allocation "
                                   "(virt/kvm/guest_memfd.c __kvm_gmem_create)"),
    "kvm.memslot.alloc": (_errno.ENOMEM, "kvm_set_memory_region: kzalloc of the new memslot "
                                         "(virt/kvm/kvm_main.c)"),
    "kvm.vcpu.alloc": (_errno.ENOMEM, "kvm_vm_ioctl_create_vcpu: kmem_cache_zalloc of the vCPU"),
    "iommufd.object.alloc": (_errno.ENOMEM, "iommufd_object_alloc (drivers/iommu/iommufd/main.c)"),
    "gmem.refcount": (_errno.EAGAIN, "the safe-refcount check of a to-private conversion: "
                                     "an extra reference appears (EAGAIN, error_offset = start)"),
    "copy_to_user": (_errno.EFAULT, "copy_to_user of an ioctl's output struct "
                                    "(lib/fault-inject-usercopy.c, fail_usercopy)"),
}

#: Faults objects armed for copy_to_user (kmock.kernel_util has no kernel at hand)
USERCOPY = []


class Faults:
    """``kernel.faults``: which failure-point hits fail, and what was hit."""

    def _refresh(self):
        kernel = self._kernel()
        if kernel is not None:
            kernel.refresh_syscall_path()

    def __init__(self, kernel):
        # weak: plugins keep kernel.faults in per-kernel state of their own (SNP's machine,
        # a WeakKeyDictionary value); a strong back reference would keep the kernel, its
        # fds and memfds alive for ever
        self._kernel = weakref.ref(kernel)
        #: True while any rule is armed or hits are recorded (the fast test)
        self.armed = False
        self.record = False
        self._rules = []  # [point or None, nth, errno, remaining count]
        self._syscall_rules = False
        self._lock = threading.Lock()
        #: (point, index) of every internal hit while recording
        self.hits = []
        #: (point, errno) of every failure made
        self.injected = []
        self._count = {}  # point -> hits since armed
        self._total = 0

    # --- arming ----------------------------------------------------------------------------

    def fail(self, point, nth=1, errno=None, times=1):
        """Fail the ``nth`` hit of ``point`` (counted from now) with ``errno`` (default:
        the point's own), ``times`` times in a row."""
        if not isinstance(point, str) or not point:
            raise ValueError("a failure point is a non-empty string")
        if type(nth) is not int or nth < 1:
            raise ValueError("nth counts from 1")
        self._arm([point, nth, errno, times])
        return self

    def fail_nth(self, n, errno=None):
        """Fail the ``n``-th internal failure-point hit of any kind (fail-nth)."""
        if type(n) is not int or n < 1:
            raise ValueError("n counts from 1")
        self._arm([None, n, errno, 1])
        return self

    def start_recording(self):
        """Record every internal hit in ``hits`` (the counting run of a sweep)."""
        with self._lock:
            self.record = True
            self.armed = True
            self._arm_usercopy()

    def clear(self):
        """Disarm every rule and stop recording (``hits``/``injected`` are kept)."""
        with self._lock:
            self._rules = []
            self.record = False
            self.armed = False
            self._count = {}
            self._total = 0
            if self in USERCOPY:
                USERCOPY.remove(self)
        if self._syscall_rules:
            self._syscall_rules = False
            self._refresh()

    def _arm(self, rule):
        with self._lock:
            self._rules.append(rule)
            self.armed = True
            self._arm_usercopy()
        if rule[0] is not None and rule[0].partition(".")[0] in ("ioctl", "syscall") \
                and not self._syscall_rules:
            self._syscall_rules = True
            self._refresh()

    def _arm_usercopy(self):
        if self not in USERCOPY:
            USERCOPY.append(self)

    # --- the checks (what the core and plugins call) ---------------------------------------

    def should_fail(self, point, errno):
        """The errno this hit of ``point`` fails with, or 0."""
        if not self.armed:
            return 0
        with self._lock:
            n = self._count.get(point, 0) + 1
            self._count[point] = n
            internal = point.partition(".")[0] not in ("ioctl", "syscall")
            if internal:
                self._total += 1
                if self.record:
                    self.hits.append(point)
            for rule in self._rules:
                rp, nth, err, left = rule
                if left <= 0:
                    continue
                if (rp == point and n >= nth) or (rp is None and internal and self._total == nth):
                    rule[3] -= 1
                    e = err or errno
                    self.injected.append((point, e))
                    return e
        return 0

    def check(self, point, errno=_errno.ENOMEM):
        """Raise ``OSError(errno)`` when this hit of ``point`` is chosen to fail."""
        if self.armed:
            e = self.should_fail(point, errno)
            if e:
                raise OSError(e, f"{os.strerror(e)} (kmock fault injected at {point})")

    # --- whole syscalls ----------------------------------------------------------------------

    @property
    def wraps_syscalls(self):
        return self._syscall_rules

    def check_syscall(self, name, args):
        """Called by the Kernel's kmock_syscall path while an ioctl./syscall. rule is armed."""
        if name == "ioctl":
            from .trace import ioctl_names

            req = args[1] if len(args) > 1 else None
            point = "ioctl." + ioctl_names().get(req, hex(req) if type(req) is int else "?")
            self.check(point, _errno.EIO)
        self.check("syscall." + name, _errno.EIO)


def check_usercopy():
    """copy_to_user's point (kmock.kernel_util): asks every armed Faults."""
    for f in list(USERCOPY):
        f.check("copy_to_user", _errno.EFAULT)
