"""The x86 vCPU setup sequence from native code: vcpu_state_native.c, built here with the
system compiler against <linux/kvm.h>, runs the register and state ioctls a VMM issues
before its first KVM_RUN, on the real /dev/kvm and under the preload library. The
flexible-array ioctls (KVM_GET/SET_MSRS, KVM_SET/GET_CPUID2, the MSR index lists) need no
server rule: their handlers read the VMM's memory at the size they compute."""

import subprocess
from pathlib import Path

import pytest

import kmock

from ._native import CC, REAL_KVM, build, needs_cc, run_mock, up_lines_match_real

HERE = Path(__file__).parent


def _has_kvm_header():
    if CC is None:
        return False
    r = subprocess.run([CC, "-fsyntax-only", "-x", "c", "-"], input="#include <linux/kvm.h>\n",
                       capture_output=True, text=True, check=False)
    return r.returncode == 0


pytestmark = [needs_cc, pytest.mark.skipif(not _has_kvm_header(), reason="no <linux/kvm.h>")]


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build(tmp_path_factory.mktemp("native") / "vcpu_state_native", HERE / "vcpu_state_native.c")



@pytest.mark.skipif(not REAL_KVM, reason="no usable /dev/kvm")
def test_vcpu_setup_lines_match_the_real_kernel(program, lib):
    up_lines_match_real(program, 35)


def test_vcpu_setup_under_kmock_linux_618(program, lib):
    out = run_mock(program, kmock.Kernel("linux-6.18")).stdout
    for line in ("up KVM_GET_MSR_INDEX_LIST nmsrs=0: -1 E2BIG, nmsrs now 43",
                 "up KVM_GET_MSR_FEATURE_INDEX_LIST: 0, 4 MSRs: 0x8b 0x10a 0x345 0xce",
                 "up KVM_GET_CPUID2 nent=1: -1 E2BIG, nent now 1",
                 "up KVM_SET_CPUID2 nent=257: -1 E2BIG",
                 "up KVM_GET_SREGS: 0 cr0 0x60000010 cs.base 0xffff0000 apic_base 0xfee00900",
                 "up KVM_GET_SREGS equal: 1",
                 "up KVM_GET_REGS rip 0x401000 rsp 0x7ff000 rflags 0x2 rdi 42 rdx 0",
                 "up KVM_GET_MSRS all: 43",
                 "up KVM_SET_MSRS STAR, unknown, SFMASK: 1",
                 "up KVM_SET_MSRS nmsrs=256: -1 E2BIG",
                 "up KVM_SET_MP_STATE HALTED: -1 EINVAL",
                 "up KVM_GET_VCPU_EVENTS: 0 flags 0xd",
                 "up KVM_GET_XCRS nr 1 xcr0 0x1",
                 "up KVM_GET_XSAVE: 0 mxcsr 0x1f80",
                 "up KVM_GET_REGS(NULL): -1 EFAULT",
                 "up KVM_GET_MSRS(8): -1 EFAULT"):
        assert line in out, line
