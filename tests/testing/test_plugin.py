"""The pytest plugin, run through pytester: fixtures, scopes, marker, options, reports."""

import json
import os

import pytest

from .conftest import PLUGIN_ARGS

ENV = {"PYTHONPATH": os.pathsep.join(
    [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
    + os.environ.get("PYTHONPATH", "").split(os.pathsep))}


@pytest.fixture
def run(pytester, monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)

    def run(*args, source=None, ini=None):
        if ini:
            pytester.makeini(ini)
        if source:
            pytester.makepyfile(test_inner=source)
        return pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)

    return run


def test_fixture_is_a_patched_kernel_closed_after_the_test(run):
    r = run(source='''
import fcntl, os, kmock as km
from kmock.uapi import kvm as K
seen = []
def test_a(kmock):
    assert isinstance(kmock, km.Kernel.__mro__[0])
    fd = os.open("/dev/kvm", os.O_RDWR)
    assert kmock.owns_fd(fd)
    assert fcntl.ioctl(fd, K.KVM_GET_API_VERSION, 0) == 12
    seen.append((kmock, fd))
def test_b(kmock):
    old, fd = seen[0]
    assert kmock is not old and not old.owns_fd(fd)  # closed at teardown
''')
    r.assert_outcomes(passed=2, warnings=1)  # test_a leaked its fd: a KmockLeakWarning
    r.stdout.fnmatch_lines(["*KmockLeakWarning*kmock left open at teardown: fds*"])


def test_scopes(run):
    r = run(source='''
ids = {}
def test_1(kmock_module, kmock_session, kmock):
    ids["m"], ids["s"], ids["f"] = kmock_module, kmock_session, kmock
def test_2(kmock_module, kmock_session, kmock):
    assert kmock_module is ids["m"] and kmock_session is ids["s"] and kmock is not ids["f"]
class TestC:
    def test_3(self, kmock_class):
        ids["c"] = kmock_class
    def test_4(self, kmock_class):
        assert kmock_class is ids["c"]
''')
    r.assert_outcomes(passed=4)


def test_profile_from_marker_option_ini_and_param(run):
    src = '''
import pytest
def test_default(kmock):
    print("PROFILE", kmock.profile.name)
@pytest.mark.kmock(profile="gmem-convert-rfc-v2")
def test_marker(kmock):
    assert kmock.profile.name == "gmem-convert-rfc-v2"
@pytest.mark.kmock("linux-6.18", iommufd_gmem_policy="notifier")
def test_marker_settings(kmock):
    assert kmock.profile.iommufd_gmem_policy == "notifier"
@pytest.mark.parametrize("kmock", ["linux-6.18", "gmem-attributes-v8"], indirect=True)
def test_param(kmock):
    assert kmock.profile.name in ("linux-6.18", "gmem-attributes-v8")
'''
    r = run("-s", source=src)
    r.assert_outcomes(passed=5)
    r.stdout.fnmatch_lines(["*PROFILE linux-6.18*"])
    r = run("-s", "--kmock-profile", "gmem-attributes-v8", source=src)
    r.stdout.fnmatch_lines(["*PROFILE gmem-attributes-v8*"])
    r = run("-s", ini="[pytest]\nkmock_profile = gmem-convert-rfc-v2\n", source=src)
    r.stdout.fnmatch_lines(["*PROFILE gmem-convert-rfc-v2*"])


def test_unknown_profile_and_platform_are_clear_errors(run):
    src = '''
import pytest
@pytest.mark.kmock(platform="z80")
def test_plat(kmock):
    pass
@pytest.mark.kmock(profile="linux-2.4")
def test_prof(kmock):
    pass
'''
    r = run(source=src)
    r.assert_outcomes(errors=2)
    r.stdout.fnmatch_lines(["*platform 'z80' is not known for x86 profiles*kmock_z80*",
                            "*unknown kmock profile 'linux-2.4'*"])
    # an arm64 platform on the default (x86) profile names what it needs
    r = run("--kmock-platform", "cca", source="def test_x(kmock):\n    pass\n")
    r.stdout.fnmatch_lines(["*platform 'cca' is not known for x86 profiles*linux-arm64-cca*"])


def test_strict_mode_fails_a_test_whose_violation_was_swallowed(run):
    src = '''
import pytest
def swallowing_vmm(k):
    try:
        k.violations.append({"kind": "stale_dma", "iova": 0x1000})  # what the mock records
        raise OSError(5, "EIO")
    except OSError:
        pass  # the VMM swallows the error
@pytest.mark.kmock(strict=True)
def test_strict(kmock):
    swallowing_vmm(kmock)
def test_lenient(kmock):
    swallowing_vmm(kmock)
'''
    r = run(source=src)
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*kmock strict mode: violations recorded by the mock:*",
                            "*stale_dma*"])
    r = run(ini="[pytest]\nkmock_strict = true\n", source=src)
    r.assert_outcomes(failed=2)


def test_failure_report_has_the_state_as_ranges_and_dump(run, pytester):
    src = '''
import fcntl, os
from kmock.uapi import kvm as K
def test_fails(kmock):
    kvm = os.open("/dev/kvm", os.O_RDWR)
    vm = fcntl.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    g = fcntl.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=1 << 21))
    r = K.kvm_userspace_memory_region2(slot=0, guest_phys_addr=1 << 32, memory_size=1 << 21,
        userspace_addr=1 << 40, flags=K.KVM_MEM_GUEST_MEMFD, guest_memfd=g)
    fcntl.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, r)
    kmock.fallocate(g, 1, 0x3000, 0x2000)
    assert False, "boom"
'''
    dump = pytester.path / "dumps"
    r = run("--kmock-dump", str(dump), source=src)
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([
        "*- kmock state -*",
        "*memslot 0:0 gpa 0x100000000 size 0x200000*guest_memfd 0 @ 0x0*",
        "*allocated: 0x3-0x5*",
        "*last syscalls:*",
        "*ioctl(*KVM_SET_USER_MEMORY_REGION2*",
    ])
    files = list(dump.iterdir())
    assert len(files) == 1
    snap = json.loads(files[0].read_text())
    assert snap["version"] == 2 and snap["guest_memfds"][0]["allocated"] == [[3, 5]]
    assert snap["vms"][0]["memslots"][0]["guest_memfd"] == 0


def test_patching_pauses_while_pytest_reports(run, pytester):
    pytester.makeconftest('''
import sys, os as real_os
seen = []
def pytest_runtest_logreport(report):
    seen.append(sys.modules["os"] is real_os)
def pytest_sessionfinish(session):
    print("PAUSED", seen)
''')
    r = run("-s", source='''
import sys, os
def test_x(kmock):
    assert sys.modules["os"] is not os.path.__class__  # (module object)
    assert getattr(sys.modules["os"], "open") is not os.path.join
    import os as inner
    assert inner.open("/dev/kvm", inner.O_RDWR) >= 0 and kmock.owns_fd(inner.open("/dev/kvm", 2))
''')
    r.assert_outcomes(passed=1, warnings=1)
    r.stdout.fnmatch_lines(["*PAUSED [[]True, True, True[]]*"])


def test_xdist_workers_each_get_their_kernel(run):
    pytest.importorskip("xdist")
    src = "".join(f'''
def test_{i}(kmock):
    import os
    fd = os.open("/dev/kvm", os.O_RDWR)
    assert kmock.owns_fd(fd)
    os.close(fd)
''' for i in range(6))
    r = run("-n", "2", source=src)
    r.assert_outcomes(passed=6)
