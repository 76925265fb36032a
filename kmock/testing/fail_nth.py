"""The fail-nth sweep: run a scenario, then re-run it failing each failure point in turn.

Modelled on tools/testing/selftests/iommu/iommufd_fail_nth.c: that test runs a
scenario once, then again with /proc/self/task/<tid>/fail-nth set to 1, 2, 3, ...
(every failslab / fail_page_alloc / fail_usercopy check of the task counts) until a
run reaches its end without the injected failure being consumed. Here the failure
points are kmock.faults' (``kernel.faults.check``), in the core and in plugins.

``sweep(scenario, make_kernel)`` runs ``scenario(kernel)`` once recording the points
it hits, then once per hit with ``kernel.faults.fail_nth(n)``. For every run it checks:

* the failing syscall raised OSError with the errno of the failure point (ENOMEM
  for an allocation, EAGAIN for the refcount check, EFAULT for copy_to_user, or
  what a plugin's point declares), whether or not the scenario handled it;
* the failed call changed nothing: the snapshot (kmock.snapshot) before and after
  it are equal;
* every invariant holds afterwards (``check_invariants``) and nothing is recorded
  as a violation that the clean run did not record;
* nothing leaked: after ``kernel.close_all()`` no kmock fd, mapping or process fd
  is left open.

Where the kernel itself keeps a change or records a consequence, that is the expected
outcome, not a problem. The plugin that models the platform declares it, next to its
scenarios and with the kernel source, scoped by platform (the kernel's
``kernel.platform.name``, so a declaration never excuses another platform's run):

* ``keeps_progress(platform, point, reason, call=None, sections=None)``: the failed
  call keeps what it changed before the failing step (the run's outcome is
  "partial: <reason>");
* ``expects_violations(platform, point, violations, reason, call=None, sections=())``:
  the kernel turns the failure into recorded violations (a KVM_BUG_ON: "td_bugged"),
  the failing call possibly changing ``sections`` (the outcome is "expected: <reason>").

A plugin makes these calls at import of the module its ``kmock.fail_nth`` entry point
names (the sweep loads those entry points first), as kmock.testing.vmm_scenarios
registers kmock's own scenarios.

It returns a ``SweepResult`` with one ``Run`` per failure point; ``problems`` lists
every check that failed (empty: the sweep passed), ``used`` the declarations the runs
needed. ``register(platform, name, scenario, make_kernel)`` adds a scenario to
``SCENARIOS`` (kmock's own are in kmock.testing.vmm_scenarios); an architecture plugin
offers its own (launch with its firmware calls, conversion, ...) through the
``kmock.fail_nth`` entry-point group, so that ``kmock sweep --platform tdx`` finds them.
"""

import os
from dataclasses import dataclass, field

from .. import snapshot as snapmod
from ..hookspecs import hookimpl

#: platform -> {scenario name: (scenario, make_kernel)}
SCENARIOS = {}


def register(platform, name, scenario, make_kernel):
    SCENARIOS.setdefault(platform, {})[name] = (scenario, make_kernel)


@dataclass(frozen=True)
class Expected:
    """An outcome of a failure at ``point`` that the kernel itself produces, declared by
    the platform's plugin (``reason``: the kernel source saying so).

    ``call``        the failing call as the sweep names it ("ioctl KVM_RUN", "ioctl 0x...");
                    None: any call, or none (a failure consumed outside a syscall)
    ``sections``    the snapshot sections (kmock.snapshot: "vms", "guest_memfds", "arch",
                    "violations", ...) the failed call may change; None: any
    ``violations``  the violation kinds the failure records (empty: a "keeps progress"
                    declaration)
    """

    platform: str
    point: str
    reason: str
    call: str = None
    sections: frozenset = None
    violations: frozenset = frozenset()

    @property
    def kind(self):
        """The run outcome it gives: "expected" (the kernel records a consequence) or
        "partial" (the kernel keeps the call's progress)."""
        return "expected" if self.violations else "partial"


#: platform -> [Expected]: what the kernel does that the sweep must not call a problem
EXPECTED = {}


def _declare(decl):
    known = EXPECTED.setdefault(decl.platform, [])
    if decl not in known:  # declaring twice (a module imported twice) is harmless
        known.append(decl)
    return decl


def keeps_progress(platform, point, reason, call=None, sections=None):
    """Declare that on ``platform`` a failure at ``point`` (inside ``call``; None: any)
    leaves what the call changed before the failing step, as the kernel does; only the
    snapshot ``sections`` named may change (None: any). Such a run's outcome is
    "partial: <reason>" instead of a "changed the state" problem; errno, invariants,
    other violations and leaks are still checked. Returns the declaration."""
    return _declare(Expected(platform, point, reason, call,
                             None if sections is None else frozenset(sections)))


def expects_violations(platform, point, violations, reason, call=None, sections=()):
    """Declare that on ``platform`` the kernel turns a failure at ``point`` into recorded
    ``violations`` (kinds, e.g. {"td_bugged"}: a KVM_BUG_ON); the failing call (``call``;
    None: any, or none) may then change the snapshot ``sections`` named (e.g. KVM_RUN of
    the bugged VM; None: any). Such a run's outcome is "expected: <reason>"; a violation
    not named, or a change the run records without one of these violations, is still a
    problem. Returns the declaration."""
    if isinstance(violations, str):
        violations = (violations,)
    if not violations:
        raise ValueError("expects_violations needs at least one violation kind")
    return _declare(Expected(platform, point, reason, call,
                             None if sections is None else frozenset(sections),
                             frozenset(violations)))


def declarations(platform):
    """The declarations of ``platform`` (those of installed plugins included)."""
    _load_entry_points()
    return tuple(EXPECTED.get(platform, ()))


def unused_declarations(platform, results):
    """The declarations of ``platform`` that no run of ``results`` (SweepResults) needed:
    a plugin's test asserts there are none, since a stale declaration would hide a
    regression."""
    used = set().union(*(r.used for r in results))
    return [d for d in declarations(platform) if d not in used]


#: the entry-point group through which a plugin offers its scenarios: name = the
#: platform, value = a function returning {scenario name: (scenario, make_kernel)}
SCENARIO_GROUP = "kmock.fail_nth"
_loaded = set()


def _load_entry_points():
    from importlib.metadata import entry_points

    for ep in entry_points(group=SCENARIO_GROUP):
        if (ep.name, ep.value) in _loaded:
            continue
        _loaded.add((ep.name, ep.value))
        for name, (fn, make) in ep.load()().items():
            register(ep.name, name, fn, make)


def scenarios(platform=None):
    """{name: (scenario, make_kernel)} of ``platform`` (all, as "platform/name", if None):
    kmock's own (kmock.testing.vmm_scenarios) and those plugins offer under the
    ``kmock.fail_nth`` entry-point group."""
    from . import vmm_scenarios  # noqa: F401  (registers kmock's own)

    _load_entry_points()
    if platform is None:
        return {f"{p}/{n}": v for p, d in SCENARIOS.items() for n, v in d.items()}
    return dict(SCENARIOS.get(platform, {}))


@dataclass
class Run:
    n: int
    point: str
    errno: int = None
    call: str = None
    #: "raised", "handled", "internal" (consumed outside a syscall), or for a declared
    #: outcome "partial: <reason>" / "expected: <reason>"
    outcome: str = ""
    problems: list = field(default_factory=list)
    #: the snapshot sections the failed call changed
    changed: list = field(default_factory=list)
    #: the violation kinds this run recorded that the clean run did not
    violations: list = field(default_factory=list)
    #: the declarations (Expected) that account for this run's outcome
    expected: list = field(default_factory=list)


@dataclass
class SweepResult:
    points: list
    runs: list
    platform: str = "none"

    @property
    def problems(self):
        return [f"fail-nth {r.n} ({r.point}): {p}" for r in self.runs for p in r.problems]

    @property
    def used(self):
        """The declarations some run of this sweep needed."""
        return {d for r in self.runs for d in r.expected}


def _comparable(snap):
    snap = dict(snap)
    for key in ("trace", "sigbus", "dma_faults"):
        snap.pop(key, None)
    return snap


class _Watcher:
    """Snapshots around each syscall; keeps the one whose call consumed the failure."""

    def __init__(self, kernel):
        self.k = kernel
        self.failed = None  # (call, errno, changed: bool, detail)

    @hookimpl(wrapper=True)
    def kmock_syscall(self, kernel, name, args):
        if self.failed is not None or not kernel.faults.armed:
            return (yield)
        before_inj = len(kernel.faults.injected)
        before = _comparable(snapmod.capture(kernel))
        try:
            return (yield)
        except OSError as e:
            if len(kernel.faults.injected) > before_inj:
                after = _comparable(snapmod.capture(kernel))
                call = name if name != "ioctl" else f"ioctl {_req(args)}"
                self.failed = (call, e.errno, _diff(before, after))
            raise


def _req(args):
    from ..trace import ioctl_names

    return ioctl_names().get(args[1], hex(args[1])) if len(args) > 1 else "?"


def _diff(a, b):
    return [k for k in a if a.get(k) != b.get(k)]


def check_invariants(kernel):
    """The cross-object invariants a failed call must not break; returns problems."""
    problems = []
    files = {}
    for fd, f in kernel.fdtable.items():
        files.setdefault(id(f), [f, 0])[1] += 1
    for m in kernel.mappings:
        if not m.closed:
            files.setdefault(id(m.file), [m.file, 0])[1] += 1
    for f, refs in files.values():
        if f.refs != refs:
            problems.append(f"{f!r} has {f.refs} references, {refs} holders")
    vms = {id(f.vm): f.vm for f, _ in files.values() if getattr(f, "vm", None) is not None}
    for vm in vms.values():
        for as_id in range(kernel.profile.nr_memslot_as_ids):
            slots = sorted(vm.memslots(as_id), key=lambda s: s.base_gfn)
            for a, b in zip(slots, slots[1:]):
                if a.end_gfn > b.base_gfn:
                    problems.append(f"memslots {a!r} and {b!r} overlap")
            for s in slots:
                if s.gmem_file is not None and s.gmem_file.inode.slots.get(s.gmem_token) is not s:
                    problems.append(f"memslot {s!r} is not bound in its guest_memfd")
    for f, _ in files.values():
        if f.file_type == "gmem":
            for token, s in f.inode.slots.items():
                if s.vm.address_space(s.as_id).by_id.get(s.id) is not s:
                    problems.append(f"guest_memfd binding {token} names a memslot that is gone")
        if f.file_type == "iommufd":
            for i, obj in f.objects.items():
                if obj.id != i:
                    problems.append(f"iommufd object {obj!r} has id {obj.id} at {i}")
    return problems


def _open_fds():
    return set(os.listdir("/proc/self/fd"))


def _leaks(kernel, fds_before):
    out = []
    if snapmod.kernel_fds(kernel):
        out.append(f"kmock fds left open: {snapmod.kernel_fds(kernel)}")
    if [m for m in kernel.mappings if not m.closed]:
        out.append("kmock mappings left open")
    extra = _open_fds() - fds_before
    if len(extra) > 0:
        out.append(f"{len(extra)} process fd(s) leaked")
    return out


def _run_once(scenario, make_kernel, n=None):
    """One run; returns (kernel faults hits, Run or None, violations, platform)."""
    k = make_kernel()
    platform = k.platform.name
    fds_before = _open_fds()  # the Kernel's own descriptors live as long as it does
    watcher = _Watcher(k)
    k.pm.register(watcher)
    k.refresh_syscall_path()
    if n is None:
        k.faults.start_recording()
    else:
        k.faults.fail_nth(n)
    run = None if n is None else Run(n, "?")
    error = None
    try:
        scenario(k)
    except OSError as e:
        error = e
    hits = list(k.faults.hits)
    injected = list(k.faults.injected)
    k.faults.clear()
    violations = [v.kind if hasattr(v, "kind") else str(v) for v in k.violations]
    problems = check_invariants(k)
    k.close_all()
    k.pm.unregister(watcher)
    problems += _leaks(k, fds_before)
    if n is None:
        if error is not None:
            raise AssertionError(f"the scenario fails without injection: {error!r}")
        if problems:
            raise AssertionError(f"the clean run breaks invariants: {problems}")
        return hits, None, violations, platform
    if not injected:
        run.problems.append("the failure was never injected (the scenario is not deterministic)")
        return hits, run, violations, platform
    run.point, run.errno = injected[0]
    if watcher.failed is None:
        # consumed where no syscall failed: a test-side call, or a step whose failure
        # the kernel does not return (a TDX zap during a conversion or a close)
        run.outcome = "internal"
    else:
        call, err, run.changed = watcher.failed
        run.call = call
        run.outcome = "raised" if error is not None else "handled"
        if err != run.errno:
            run.problems.append(f"{call} failed with errno {err}, the point gives {run.errno}")
    if error is not None and watcher.failed is not None and error.errno != watcher.failed[1]:
        run.problems.append(f"the scenario saw errno {error.errno}, the call failed with "
                            f"{watcher.failed[1]}")
    run.problems += problems
    return hits, run, violations, platform


def _judge(run, platform):
    """The run's state change and new violations against ``platform``'s declarations."""
    decls = [d for d in EXPECTED.get(platform, ())
             if d.point == run.point and d.call in (None, run.call)]
    used = []
    if run.violations:
        match = [d for d in decls if d.violations and set(run.violations) <= d.violations]
        if match:
            used.append(match[0])
        else:
            run.problems.append(f"violations a clean run does not record: {run.violations}")
    if run.changed:
        # a change is excused by a "keeps progress" declaration, or by an "expected"
        # one whose violations this run recorded
        match = [d for d in decls if (not d.violations or d in used)
                 and (d.sections is None or set(run.changed) <= d.sections)]
        if match:
            if match[0] not in used:
                used.append(match[0])
        else:
            run.problems.append(f"the failed {run.call} changed the state "
                                f"({', '.join(run.changed)})")
    if used:
        run.expected = used
        run.outcome = "; ".join(
            f"expected: {d.reason} (records {', '.join(run.violations)})" if d.violations
            else f"partial: {d.reason}" for d in sorted(used, key=lambda d: d.kind != "expected"))


def sweep(scenario, make_kernel, on_run=None):
    """Run the fail-nth sweep of ``scenario(kernel)`` on kernels from ``make_kernel()``.

    The declarations (``keeps_progress``, ``expects_violations``) of the kernel's
    platform (``kernel.platform.name``) decide which changes and violations are the
    kernel's own. ``on_run(i, total, run)`` is called after each failing run (progress)."""
    _load_entry_points()  # the plugins' declarations come with their scenarios' modules
    hits, _, clean_violations, platform = _run_once(scenario, make_kernel)
    runs = []
    for n in range(1, len(hits) + 1):
        _, run, violations, _ = _run_once(scenario, make_kernel, n)
        run.violations = [v for v in violations if v not in clean_violations]
        _judge(run, platform)
        if run.point != hits[n - 1] and not run.problems:
            run.problems.append(f"expected point {hits[n - 1]}, failed {run.point}")
        runs.append(run)
        if on_run is not None:
            on_run(n, len(hits), run)
    return SweepResult(hits, runs, platform)
