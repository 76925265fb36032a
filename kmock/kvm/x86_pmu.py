"""X.KVM_SET_PMU_EVENT_FILTER on an x86 VM: the PMU event filter (kvm->arch.pmu_event_filter).

Mirrors arch/x86/kvm/pmu.c of Linux 6.18 (kvm_vm_ioctl_set_pmu_event_filter,
prepare_filter_lists, convert_to_masked_filter, is_masked_filter_valid,
is_gp_event_allowed, is_fixed_event_allowed); the order and errnos were confirmed on the
6.18.44 host by the conformance scenario ``x86_pmu_event_filter``
(kmock.testing.conformance_x86_vm_misc).

Facts the code relies on (all from that function unless said otherwise):

* nothing checks for a vPMU: the filter is accepted and stored whether or not the module
  has ``enable_pmu`` and whether KVM_CAP_PMU_CAPABILITY disabled the VM's PMU
  (kvm->arch.enable_pmu); the probe host has enable_pmu=N and accepts it;
* ``pad`` is not checked, ``fixed_counter_bitmap`` is stored as given and has no relation
  to ``nevents`` (an ALLOW filter with no event still allows the fixed counters in the
  bitmap, is_fixed_event_allowed);
* without X.KVM_PMU_EVENT_FLAG_MASKED_EVENTS, events with bits outside the event select and
  unit mask are dropped, not refused ("impossible filters can't be rejected").

The filter is bookkeeping: kmock has no vPMU whose counters it would gate. The ``allows_*``
methods say what the kernel's check_pmu_event_filter would answer.
"""

import ctypes
import errno

from ..errors import oserror
from ..kernel_util import copy_from_user, read_user_at
from ..uapi import x86 as X
from . import x86_vm
from .x86_state import cpuid_entry

#: pmu.c
KVM_PMU_EVENT_FILTER_MAX_EVENTS = 300
ARCH_PERFMON_EVENTSEL_UMASK = 0xFF00
#: kvm_pmu_ops.EVENTSEL_EVENT: Intel ARCH_PERFMON_EVENTSEL_EVENT (vmx/pmu_intel.c), AMD
#: AMD64_EVENTSEL_EVENT with event select bits 35:32 (svm/pmu.c). The PVM probe host
#: refuses bit 32 in a masked entry, as Intel does.
EVENTSEL_EVENT_INTEL = 0xFF
EVENTSEL_EVENT_AMD = 0xFF | 0xF << 32
#: CPUID.0 vendor (EBX, ECX, EDX) of AMD and Hygon ("AuthenticAMD", "HygonGenuine")
_AMD_VENDORS = ((0x68747541, 0x444D4163, 0x69746E65), (0x6F677948, 0x656E6975, 0x6E65476E))


def eventsel_event(profile):
    """kvm_pmu_ops.EVENTSEL_EVENT of the profile's vendor module, told by the vendor
    string of its supported CPUID leaf 0 (Intel unless AMD or Hygon)."""
    e = cpuid_entry(profile.cpuid, 0)
    if e is not None and (e[4], e[5], e[6]) in _AMD_VENDORS:
        return EVENTSEL_EVENT_AMD
    return EVENTSEL_EVENT_INTEL


class PmuEventFilter:
    """struct kvm_x86_pmu_event_filter as prepare_filter_lists leaves it: ``events`` in
    the in-kernel (masked) encoding, sorted by event select with the includes first and
    the excludes (masked filters only) after them."""

    __slots__ = ("action", "events", "eventsel_event", "fixed_counter_bitmap", "flags",
                 "nr_includes")

    def __init__(self, action, flags, fixed_counter_bitmap, events, nr_includes, eventsel_event):
        self.action = action
        self.flags = flags
        self.fixed_counter_bitmap = fixed_counter_bitmap
        self.events = events
        self.nr_includes = nr_includes
        self.eventsel_event = eventsel_event

    @property
    def includes(self):
        return self.events[:self.nr_includes]

    @property
    def excludes(self):
        return self.events[self.nr_includes:]

    def _contains(self, entries, eventsel):
        """filter_contains_match: an entry of the event select whose umask mask/match fits."""
        select = eventsel & self.eventsel_event
        umask = eventsel & ARCH_PERFMON_EVENTSEL_UMASK
        for e in entries:
            if e & X.KVM_PMU_MASKED_ENTRY_EVENT_SELECT != select:
                continue
            mask = e >> (X.KVM_PMU_MASKED_ENTRY_UMASK_MASK_SHIFT - 8) & ARCH_PERFMON_EVENTSEL_UMASK
            if umask & mask == e & X.KVM_PMU_MASKED_ENTRY_UMASK_MATCH:
                return True
        return False

    def allows_gp_event(self, eventsel):
        """is_gp_event_allowed: a general-purpose counter programmed with ``eventsel``."""
        if self._contains(self.includes, eventsel) and not self._contains(self.excludes, eventsel):
            return self.action == X.KVM_PMU_EVENT_ALLOW
        return self.action == X.KVM_PMU_EVENT_DENY

    def allows_fixed_counter(self, idx):
        """is_fixed_event_allowed: fixed counter ``idx`` (0-based)."""
        listed = bool(self.fixed_counter_bitmap >> idx & 1)
        return listed if self.action == X.KVM_PMU_EVENT_ALLOW else not listed

    def __repr__(self):
        action = "allow" if self.action == X.KVM_PMU_EVENT_ALLOW else "deny"
        return (f"<PmuEventFilter {action} flags={self.flags:#x} fixed={self.fixed_counter_bitmap:#x}"
                f" includes={self.nr_includes} excludes={len(self.events) - self.nr_includes}>")


def prepare_events(events, flags, eventsel_event):
    """prepare_filter_lists: (sorted in-kernel events, nr_includes), or EINVAL when a
    masked entry has bits outside event select | umask mask | umask match | exclude
    (is_masked_filter_valid)."""
    if flags & X.KVM_PMU_EVENT_FLAG_MASKED_EVENTS:
        valid = (eventsel_event | X.KVM_PMU_MASKED_ENTRY_UMASK_MASK
                 | X.KVM_PMU_MASKED_ENTRY_UMASK_MATCH | X.KVM_PMU_MASKED_ENTRY_EXCLUDE)
        if any(e & ~valid for e in events):
            raise oserror(errno.EINVAL)
    else:  # convert_to_masked_filter: an all-ones umask mask, impossible events dropped
        keep = eventsel_event | ARCH_PERFMON_EVENTSEL_UMASK
        events = [e | 0xFF << X.KVM_PMU_MASKED_ENTRY_UMASK_MASK_SHIFT
                  for e in events if not e & ~keep]
    # filter_sort_cmp orders by event select and EXCLUDE; the full value breaks ties so
    # that the stored order is deterministic (the kernel's sort() is not stable)
    key_mask = X.KVM_PMU_MASKED_ENTRY_EVENT_SELECT | X.KVM_PMU_MASKED_ENTRY_EXCLUDE
    events = tuple(sorted(events, key=lambda e: (e & key_mask, e)))
    nr_includes = len(events)
    if flags & X.KVM_PMU_EVENT_FLAG_MASKED_EVENTS:
        nr_includes = next((i for i, e in enumerate(events)
                            if e & X.KVM_PMU_MASKED_ENTRY_EXCLUDE), len(events))
    return events, nr_includes


def vm_set_pmu_event_filter(f, arg):
    """kvm_vm_ioctl_set_pmu_event_filter: the header (EFAULT); action neither ALLOW nor
    DENY, then flags beyond X.KVM_PMU_EVENT_FLAGS_VALID_MASK: EINVAL; nevents above 300:
    E2BIG; the events (EFAULT); prepare_filter_lists (EINVAL). On success the new filter
    replaces the VM's under kvm->lock; a failure changes nothing."""
    vm = f.vm
    vm.check_caller()
    head = copy_from_user(arg, X.kvm_pmu_event_filter)
    if head.action not in (X.KVM_PMU_EVENT_ALLOW, X.KVM_PMU_EVENT_DENY):
        raise oserror(errno.EINVAL)
    if head.flags & ~X.KVM_PMU_EVENT_FLAGS_VALID_MASK:
        raise oserror(errno.EINVAL)
    if head.nevents > KVM_PMU_EVENT_FILTER_MAX_EVENTS:
        raise oserror(errno.E2BIG)
    n = head.nevents
    raw = read_user_at(arg, ctypes.sizeof(X.kvm_pmu_event_filter), 8 * n) if n else b""
    events = list((ctypes.c_uint64 * n).from_buffer_copy(raw)) if n else []
    sel = eventsel_event(vm.kernel.profile)
    events, nr_includes = prepare_events(events, head.flags, sel)
    flt = PmuEventFilter(head.action, head.flags, head.fixed_counter_bitmap, events,
                         nr_includes, sel)
    s = x86_vm.state(vm)
    with s.lock:
        s.pmu_event_filter = flt
    return 0
