"""The pytest plugin (entry point ``pytest11: kmock``): the ``kmock`` fixture and friends.

``def test_x(kmock): ...`` gets a ``kmock.Kernel`` with os/fcntl/mmap/ctypes patched
(kmock.testing.patcher) for the test, closed after it. ``kmock_class``,
``kmock_module`` and ``kmock_session`` are the wider scopes. Settings, first found
wins: ``@pytest.mark.kmock(profile=, platform=, strict=, patch=, **settings)``, the
fixture's ``param`` (``indirect=True`` parametrisation: a profile name or a dict),
``--kmock-profile`` / ``--kmock-platform``, the ini ``kmock_profile``, ``linux-6.18``.
A failing test's report gets a "kmock state" section (kmock.snapshot as text);
``--kmock-dump DIR`` writes the snapshot as JSON too. ``strict=True`` fails a test
that recorded a violation, even if the VMM swallowed the error.
"""

import warnings

import pytest

from . import report
from .patcher import Patcher
from .platforms import kernel_for
FIXTURES = ("kmock", "kmock_class", "kmock_module", "kmock_session")
DEFAULT_PROFILE = "linux-6.18"


class KmockLeakWarning(UserWarning):
    """A test left kmock fds or mappings open."""


def pytest_addoption(parser):
    group = parser.getgroup("kmock", "kmock (mock KVM / guest_memfd / iommufd)")
    group.addoption("--kmock-profile", default=None,
                    help="kernel profile of the kmock fixtures (default: ini kmock_profile)")
    group.addoption("--kmock-platform", default=None,
                    help="confidential platform of the kmock fixtures (none, or one an "
                         "installed plugin declares: tdx, snp, cca ...)")
    group.addoption("--kmock-dump", default=None, metavar="DIR",
                    help="write the kmock snapshot of each failing test to DIR as JSON")
    parser.addini("kmock_profile", "default kernel profile of the kmock fixtures",
                  default=DEFAULT_PROFILE)
    parser.addini("kmock_strict", "fail tests that record a kmock violation",
                  type="bool", default=False)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "kmock(profile=None, platform=None, strict=None, patch=True, **settings): "
        "settings of the kmock fixture for this test")


def make_kernel(profile, platform=None, **settings):
    """kernel_for() with its errors as pytest usage errors (no traceback)."""
    try:
        return kernel_for(profile, platform, **settings)
    except ValueError as e:  # PlatformError, or an unknown profile
        raise pytest.UsageError(str(e)) from None


def _settings(request):
    cfg = request.config
    s = {"profile": cfg.getoption("kmock_profile") or cfg.getini("kmock_profile"),
         "platform": cfg.getoption("kmock_platform"),
         "strict": cfg.getini("kmock_strict"), "patch": True}
    param = getattr(request, "param", None)
    if isinstance(param, str):
        s["profile"] = param
    elif isinstance(param, dict):
        s.update(param)
    marker = request.node.get_closest_marker("kmock")
    if marker is not None:
        if marker.args:
            s["profile"] = marker.args[0]
        s.update(marker.kwargs)
    return s


#: id(kernel) -> (kernel, patcher, settings), for the report hooks
_live = {}


def _kernel_fixture(request):
    s = dict(_settings(request))
    profile, platform = s.pop("profile"), s.pop("platform")
    strict, patch = s.pop("strict"), s.pop("patch")
    kernel = make_kernel(profile, platform, **s)
    patcher = Patcher(kernel).start() if patch else None
    _live[id(kernel)] = (kernel, patcher, {"strict": strict, "violations_seen": 0})
    try:
        yield kernel
    finally:
        try:
            _leak_check(request, kernel, patcher)
        finally:
            if patcher is not None:
                patcher.stop()
            _live.pop(id(kernel), None)
            kernel.close_all()


def _leak_check(request, kernel, patcher):
    from ..snapshot import kernel_fds

    fds = kernel_fds(kernel)
    if patcher is not None and patcher.stale_fds:
        fds = fds + [fd for fd, _ in patcher.stale_fds]
    maps = patcher.open_mappings() if patcher is not None else []
    if fds or maps:
        what = [f"fds {fds}"] if fds else []
        what += [f"mappings {maps}"] if maps else []
        warnings.warn(KmockLeakWarning(
            f"{request.node.nodeid}: kmock left open at teardown: {', '.join(what)}"),
            stacklevel=1)


@pytest.fixture
def kmock(request):
    """A kmock.Kernel for one test, with os/fcntl/mmap patched (see kmock.testing)."""
    yield from _kernel_fixture(request)


@pytest.fixture(scope="class")
def kmock_class(request):
    yield from _kernel_fixture(request)


@pytest.fixture(scope="module")
def kmock_module(request):
    yield from _kernel_fixture(request)


@pytest.fixture(scope="session")
def kmock_session(request):
    yield from _kernel_fixture(request)


def _kernels_of(item):
    funcargs = getattr(item, "funcargs", None) or {}
    for name in FIXTURES:
        k = funcargs.get(name)
        if k is not None and id(k) in _live:
            yield _live[id(k)]


def _pause_all(item):
    paused = []
    for _, patcher, _ in _kernels_of(item):
        if patcher is not None and patcher.active:
            patcher.pause()
            paused.append(patcher)
    return paused


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    paused = _pause_all(item)
    try:
        rep = yield
        for kernel, patcher, state in _kernels_of(item):
            if rep.when == "call" and state["strict"]:
                new = list(kernel.violations)[state["violations_seen"]:]
                state["violations_seen"] = len(kernel.violations)
                if new and not rep.failed:
                    rep.outcome = "failed"
                    rep.longrepr = "kmock strict mode: violations recorded by the mock:\n" + \
                        "\n".join(f"  {v}" for v in new)
            if rep.failed:
                snap, text = report.section(kernel, patcher)
                rep.sections.append(("kmock state", text))
                directory = item.config.getoption("kmock_dump")
                if directory:
                    path = report.dump(snap, directory, f"{item.nodeid}-{rep.when}")
                    rep.sections.append(("kmock dump", path))
        return rep
    finally:
        for p in paused:
            p.resume()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_logreport(report):
    """Patching pauses while pytest reports (as pyfakefs does)."""
    paused = []
    for _, patcher, _ in list(_live.values()):
        if patcher is not None and patcher.active:
            patcher.pause()
            paused.append(patcher)
    try:
        return (yield)
    finally:
        for p in paused:
            p.resume()
