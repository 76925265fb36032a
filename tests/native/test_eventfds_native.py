"""KVM_IOEVENTFD, KVM_IRQFD and KVM_SET_GSI_ROUTING from native code: eventfds_native.c,
built here with the system compiler, registers eventfds as a VMM does. Under `kmock run`
the fd fields reach the mock as the server's copies of the VMM's eventfds (argrules:
pidfd_getfd), so identity (a dup'ed fd names the same eventfd), EBADF and EINVAL are
the real kernel's."""

from pathlib import Path

import pytest

import kmock
from kmock.hookspecs import hookimpl

from ._native import REAL_KVM, build, lines, needs_cc, run_mock, up_lines_match_real

HERE = Path(__file__).parent
pytestmark = needs_cc


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build(tmp_path_factory.mktemp("native") / "eventfds_native", HERE / "eventfds_native.c")


def up(text):
    return lines(text, "up ")


@pytest.mark.skipif(not REAL_KVM, reason="no usable /dev/kvm")
def test_eventfd_lines_match_the_real_kernel(program, lib):
    up_lines_match_real(program, 30)


def test_eventfds_under_kmock(program, lib):
    out = run_mock(program, kmock.Kernel("linux-6.18")).stdout
    for line in ("up irqfd before the irqchip: -1 EINVAL",
                 "up ioeventfd PIO 0xc000 len 2: 0",
                 "up ioeventfd PIO 0xc000 len 2 again: -1 EEXIST",
                 "up ioeventfd closed fd: -1 EBADF",
                 "up ioeventfd /dev/kvm fd: -1 EINVAL",
                 "up ioeventfd deassign PIO through a dup'ed fd: 0",
                 "up irqfd gsi 6 through a dup'ed fd: -1 EBUSY",
                 "up irqfd resample gsi 10: 0",
                 "up counter after KVM_IRQFD: 3",
                 "up SET_GSI_ROUTING ioapic + 2 MSI: 0",
                 "up SET_GSI_ROUTING MSI twice on one gsi: -1 EINVAL"):
        assert line in out


class ScriptOutb:
    """A test plugin: vCPU ioctl _IO(KVMIO, 0xfe) scripts outb(0xc000, 1), outb(0xc001, 2)."""

    @hookimpl
    def kmock_ioctls(self, kernel, file_type):
        if file_type != "vcpu":
            return {}

        def script(f, arg):
            f.vcpu.guest.outb(0xC000, 1)
            f.vcpu.guest.outb(0xC001, 2)
            return 0

        return {0xAEFE: script}


def test_guest_write_signals_the_vmms_eventfd(program, lib):
    from kmock import preload

    res = preload.run([program, "guest"], kernel=kmock.Kernel("linux-6.18", plugins=[ScriptOutb()]),
                      timeout=120)
    assert res.server.errors == [] and res.returncode == 0, res.stderr
    assert up(res.stdout) == [
        "up ioeventfd PIO 0xc000 len 0: 0",
        "up script: 0",
        "up KVM_RUN: 0",
        "up exit_reason 2 port 0xc001",  # KVM_EXIT_IO for the second outb only
        "up notify counter: 1",
    ]
