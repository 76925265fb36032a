"""guest_memfd's users: the notifier interface every user of guest_memfd pages implements.

guest_memfd owns its memory (shared/DESIGN.md "guest_memfd is the memory provider").
Everything that maps or pins its pages registers a notifier on the inode:

* each memslot binding (KVM stage-2 of one VM),
* each host mapping (mmap, in this process or, standing for another, a second mmap),
* each iommufd area that maps guest_memfd pages,
* the architecture of the VM that created the guest_memfd,
* any notifier a user or a test registers with ``inode.register_notifier(n)``.

One method, ``GmemInode.invalidate``, runs every operation that takes memory away
from these users (conversion in either UAPI, the VM-level attribute change,
PUNCH_HOLE, release, memory failure), in this order::

    veto            every notifier may refuse (an errno) before anything changes
    invalidate_begin    zap the users' mappings of the old kind (mmu_invalidate_begin)
    (refcount check)    to-private only: a pinned page -> EAGAIN with error_offset
    invalidate_commit   the architecture's callback (make_shared, S-EPT removal, RMPUPDATE ...)
    (store)             the new state is stored
    invalidate_end      users re-sync (event.failed is the errno when the call failed)

A failed call runs ``invalidate_end`` too, with ``event.failed`` set, and changes no
state: mappings zapped by ``invalidate_begin`` are simply faulted in again, as in the
kernel. This module is shared by kvm/ and iommufd/, which never import each other.
"""

import errno as _errno

#: why guest_memfd is invalidating pages
REASONS = ("convert_private", "convert_shared", "vm_attributes", "punch_hole", "release",
           "memory_failure")


class InvalidateEvent:
    """One run of the invalidation sequence over guest_memfd pages [start, end).

    ``reason``: one of REASONS. ``to_private``: True / False for a conversion or a
    VM-level attribute change, None when pages go away (punch, release, memory
    failure). ``vm``: for "vm_attributes" the VM whose attributes change (only its
    users act), else None. ``failed``: 0, or the errno the call failed with (set
    before ``invalidate_end``).
    """

    def __init__(self, inode, start, end, reason, to_private=None, vm=None):
        if reason not in REASONS:
            raise ValueError(f"invalidation reason must be one of {REASONS}, not {reason!r}")
        self.inode = inode
        self.start = start
        self.end = end
        self.reason = reason
        self.to_private = to_private
        self.vm = vm
        self.failed = 0

    @property
    def zap_kind(self):
        """Which mappings go: "shared" (to private), "private" (to shared), None (both:
        the pages themselves go away). The kernel's KVM_FILTER_SHARED / _PRIVATE."""
        if self.to_private is None:
            return None
        return "shared" if self.to_private else "private"

    @property
    def host_loses_access(self):
        """Whether host mappings of the range must fault after this (to private, poison)."""
        return self.to_private is True or self.reason == "memory_failure"

    def __repr__(self):
        return (f"<InvalidateEvent {self.reason} [{self.start:#x}, {self.end:#x})"
                f"{'' if self.to_private is None else ' private' if self.to_private else ' shared'}"
                f"{' failed ' + _errno.errorcode.get(self.failed, str(self.failed)) if self.failed else ''}>")


class GmemNotifier:
    """Base class of guest_memfd users. Override the steps you take part in.

    Every method is called once per operation (never per page), with the inode's
    invalidate lock held. Only ``veto`` may fail (return an errno); the others must
    not raise.
    """

    def veto(self, event):
        """Refuse the whole operation before anything changes: return an errno, or
        ``(errno, page index)`` to name the page reported as error_offset, or None."""
        return None

    def invalidate_begin(self, event):
        """Zap this user's mappings of ``event.zap_kind`` in [event.start, event.end)."""

    def invalidate_commit(self, event):
        """The checks passed; the new state is stored right after this (the arch step)."""

    def invalidate_end(self, event):
        """The operation finished (or failed: ``event.failed``); re-sync with the state."""


_STEPS = ("veto", "invalidate_begin", "invalidate_commit", "invalidate_end")


def step_lists(notifiers):
    """For each step, the notifiers that implement it (the base class's no-ops are
    skipped), in registration order: computed when a notifier is registered, so the
    sequence calls nothing that does nothing. (The steps are cpdef methods of the compiled
    GmemNotifier: called on a notifier, a compiled user's are C calls.)"""
    out = []
    for step in _STEPS:
        base = getattr(GmemNotifier, step)
        out.append(tuple(n for n in notifiers if getattr(type(n), step, base) is not base))
    return tuple(out)


def check_veto(notifier, result):
    """(errno, index or None) of a veto's answer; 0 when it allows. A veto must return
    None, a positive errno or (errno, index); anything else is the notifier's bug."""
    if result is None or result is False or (type(result) is int and result == 0):
        return 0, None
    code, index = result, None
    if type(result) is tuple and len(result) == 2:
        code, index = result
        if type(index) is not int or index < 0:
            code = None
    if type(code) is int and 0 < code < 4096:
        return code, index
    from .errors import PluginError

    raise PluginError(f"{notifier!r}: veto returned {result!r}; a veto returns an errno "
                      f"(a positive int), (errno, page index) or None")
