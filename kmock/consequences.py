"""The consequences API: what confidential hardware would do, recorded uniformly.

Architecture plugins (and the core, for stale DMA or orphaned pins) never crash the
VMM's process and never swallow a consequence: they record a ``Violation`` with an
explanation a person understands, and make it surface where the real system
surfaces it (KVM_RUN failing with EIO for a dead VM, a system-event exit, a
``kmock.SigBus`` for a host access, a ``kmock.DmaFault`` for a device).

``kernel.violations`` is a ``ViolationLog``: a list of ``Violation`` records with
``record(...)``. A record also behaves as a read-only mapping (``v["kind"]``), so
code that read the older plain-dict records keeps working.
"""

import threading
from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Violation:
    """One consequence the hardware (or the kernel) would impose.

    kind         a short stable name, e.g. "td_killed", "rmp_fault", "stale_iommu_dma"
    explanation  what happened and why, for a person
    vm, vcpu     the VM object (or None) and the vCPU id (or None)
    gpa, iova    the guest physical address / IO virtual address concerned, or None
    detail       hardware detail: a TDX status, an RMP entry, a RIPAS ... (plain data)
    """

    kind: str
    explanation: str = ""
    vm: object = None
    vcpu: int = None
    gpa: int = None
    iova: int = None
    detail: dict = field(default_factory=dict)

    # --- read-only mapping view (the records used to be dicts) ---------------------------

    def _flat(self):
        d = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        d.pop("detail", None)
        d.update(self.detail)
        return d

    def __getitem__(self, key):
        return self._flat()[key]

    def get(self, key, default=None):
        return self._flat().get(key, default)

    def __contains__(self, key):
        return key in self._flat()

    def keys(self):
        return self._flat().keys()

    def __str__(self):
        where = []
        if self.gpa is not None:
            where.append(f"gpa {self.gpa:#x}")
        if self.iova is not None:
            where.append(f"iova {self.iova:#x}")
        if self.vcpu is not None:
            where.append(f"vcpu {self.vcpu}")
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.kind}{loc}: {self.explanation}"

    def as_dict(self):
        """Plain JSON-able data (the VM is named by its type)."""
        d = {"kind": self.kind, "explanation": self.explanation}
        if self.vm is not None:
            d["vm"] = getattr(self.vm, "type", None)
        for k in ("vcpu", "gpa", "iova"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        if self.detail:
            d["detail"] = {k: v if isinstance(v, (int, str, bool, float, type(None))) else repr(v)
                           for k, v in self.detail.items()}
        return d


class BoundedLog(list):
    """A list that keeps its newest ``limit`` entries (``limit`` None: every entry).

    The kernel's logs (``sigbus_log``, ``violations``, ``dma_faults``) are BoundedLogs
    sized by the ``log_limit`` profile setting, so a long run does not grow without
    bound. ``dropped`` counts the entries let go; ``limit`` may be changed at any time.
    Only ``append`` (how kmock adds entries) enforces the limit.
    """

    def __init__(self, limit=None):
        super().__init__()
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                                  or limit < 0):
            from .errors import KmockUsageError

            raise KmockUsageError(f"log_limit must be None or an int >= 0, not {limit!r}")
        self.limit = limit
        self.dropped = 0

    def append(self, entry):
        super().append(entry)
        limit = self.limit
        if limit is not None and len(self) > limit:
            n = len(self) - limit
            del self[:n]
            self.dropped += n


class ViolationLog(BoundedLog):
    """``kernel.violations``: the recorded consequences, in order (the newest
    ``limit`` of them)."""

    def __init__(self, limit=None):
        super().__init__(limit)
        self._lock = threading.Lock()

    def record(self, kind, explanation="", *, vm=None, vcpu=None, gpa=None, iova=None, **detail):
        """Record a consequence and return it."""
        if not isinstance(kind, str) or not kind:
            raise TypeError("violation kind must be a non-empty string")
        v = Violation(kind, explanation, vm, vcpu, gpa, iova, detail)
        with self._lock:
            self.append(v)
        return v

    def of_kind(self, kind):
        return [v for v in self if v.kind == kind]
