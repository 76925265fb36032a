"""VmType.has_protected_state, guest_state_protected(vcpu), fpu_confidential(vcpu)
(contract addition for TDX/SEV-ES/SNP vCPUs): the x86 state ioctls refuse as
arch/x86/kvm/x86.c (6.18) does. A protected state makes REGS, SREGS, XCRS and DEBUGREGS
EINVAL; a confidential fpstate makes FPU and XSAVE EINVAL on a protected-state VM and a
no-op (GETs read zeros) on any other; nothing is written when they refuse; the other
ioctls (CPUID2, MSRS, MP_STATE, VCPU_EVENTS) keep working."""

import ctypes
import errno
import os

import pytest

import kmock
from kmock.hookspecs import hookimpl
from kmock.kvm.vmtype import VmType
from kmock.platforms import Platform
from kmock.testing.conformance_vcpu import msrs_buf, msrs_values
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

TYPE = 12


class GuardedVm(VmType):
    type = TYPE
    name = "KVM_X86_GUARDED_VM (test)"
    platforms = ("guarded",)
    has_protected_state = True

    def __init__(self):
        self.protected = False
        self.confidential = False
        self.tsc = False

    def guest_state_protected(self, vcpu):
        return self.protected

    def fpu_confidential(self, vcpu):
        return self.confidential

    def guest_tsc_protected(self, vcpu):
        return self.tsc


class OpenVm(GuardedVm):
    """A VM type whose fpstate may be confidential without protected state (SEV-ES
    launched through KVM_SEV_ES_INIT on a default VM)."""
    type = TYPE + 1
    name = "KVM_X86_OPEN_VM (test)"
    has_protected_state = False


class PlainVm(VmType):
    type = TYPE + 2
    name = "KVM_X86_PLAIN_VM (test)"
    platforms = ("guarded",)
    has_protected_state = True


class Plugin:
    def __init__(self):
        self.types = {t.type: t for t in (GuardedVm(), OpenVm(), PlainVm())}

    @hookimpl
    def kmock_vm_types(self, kernel):
        return list(self.types.values())

    @hookimpl
    def kmock_platforms(self, kernel):
        return [Platform("guarded", "x86", "protected-state test platform")]


def make(type_):
    plugin = Plugin()
    k = kmock.Kernel("linux-6.18", plugins=[plugin], platform="guarded")
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, type_)
    return k, plugin.types[type_], k.ioctl(vm, K.KVM_CREATE_VCPU, 0)


@pytest.fixture
def guarded():
    k, vt, v = make(TYPE)
    yield k, vt, v
    k.close_all()


def err(k, fd, req, arg):
    with pytest.raises(OSError) as e:
        k.ioctl(fd, req, arg)
    return e.value.errno


def snapshot(k, v):
    """Everything the refused ioctls could change, read with the checks off."""
    out = []
    for req, t in ((X.KVM_GET_REGS, K.kvm_regs), (X.KVM_GET_SREGS, X.kvm_sregs),
                   (X.KVM_GET_XCRS, X.kvm_xcrs), (X.KVM_GET_DEBUGREGS, X.kvm_debugregs),
                   (X.KVM_GET_FPU, X.kvm_fpu), (X.KVM_GET_XSAVE, X.kvm_xsave)):
        s = t()
        k.ioctl(v, req, s)
        out.append(bytes(s))
    return out


def new_values():
    sregs = X.kvm_sregs(cr0=0x60000010)
    return [
        (X.KVM_SET_REGS, K.kvm_regs(rip=0x1000, rax=7)),
        (X.KVM_SET_SREGS, sregs),
        (X.KVM_SET_XCRS, X.kvm_xcrs(nr_xcrs=1)),
        (X.KVM_SET_DEBUGREGS, X.kvm_debugregs(dr7=0x401)),
    ]


def test_a_vm_type_without_the_methods_is_never_asked():
    assert not PlainVm.has_vcpu_state_hooks and GuardedVm.has_vcpu_state_hooks
    assert not VmType.has_protected_state
    k, _, v = make(TYPE + 2)
    k.ioctl(v, X.KVM_SET_REGS, K.kvm_regs(rip=0x1000))
    k.close_all()


def test_protected_state_refuses_with_einval_and_writes_nothing(guarded):
    k, vt, v = guarded
    before = snapshot(k, v)
    vt.protected = True
    for req, t in ((X.KVM_GET_REGS, K.kvm_regs), (X.KVM_GET_SREGS, X.kvm_sregs),
                   (X.KVM_GET_XCRS, X.kvm_xcrs), (X.KVM_GET_DEBUGREGS, X.kvm_debugregs)):
        assert err(k, v, req, t()) == errno.EINVAL
    for req, value in new_values():
        assert err(k, v, req, value) == errno.EINVAL
    # invalid input is EINVAL too, but from the protected check: flags are not looked at
    assert err(k, v, X.KVM_SET_DEBUGREGS, X.kvm_debugregs(flags=1)) == errno.EINVAL
    # the FPU is not part of guest_state_protected: only fpu_confidential hides it
    k.ioctl(v, X.KVM_GET_FPU, X.kvm_fpu())
    vt.protected = False
    assert snapshot(k, v) == before


def test_state_ioctls_that_stay_allowed(guarded):
    k, vt, v = guarded
    vt.protected = vt.confidential = True
    assert k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(0xC0000082, 0xFFFFFFFF81000000)])) == 1
    assert k.ioctl(v, X.KVM_GET_MSRS, msrs_buf([(0xC0000082, 0)])) == 1
    k.ioctl(v, X.KVM_SET_CPUID2, bytes(8))
    k.ioctl(v, X.KVM_GET_MP_STATE, X.kvm_mp_state())
    ev = X.kvm_vcpu_events()
    k.ioctl(v, X.KVM_GET_VCPU_EVENTS, ev)
    k.ioctl(v, X.KVM_SET_VCPU_EVENTS, ev)


def test_a_protected_state_set_reads_its_argument_first(guarded):
    """kvm_vcpu_ioctl copies a SET's argument in before the arch handler: EFAULT wins."""
    k, vt, v = guarded
    vt.protected = True
    assert err(k, v, X.KVM_SET_REGS, 0) == errno.EFAULT
    assert err(k, v, X.KVM_GET_REGS, 0) == errno.EINVAL


def test_confidential_fpu_on_a_protected_state_vm_is_einval(guarded):
    k, vt, v = guarded
    before = snapshot(k, v)
    vt.confidential = True
    for req, t in ((X.KVM_GET_FPU, X.kvm_fpu), (X.KVM_SET_FPU, X.kvm_fpu),
                   (X.KVM_GET_XSAVE, X.kvm_xsave), (X.KVM_SET_XSAVE, X.kvm_xsave)):
        assert err(k, v, req, t(fcw=0x27f) if t is X.kvm_fpu else t()) == errno.EINVAL
    assert err(k, v, X.KVM_GET_XSAVE2, X.kvm_xsave()) == errno.EINVAL
    k.ioctl(v, X.KVM_GET_REGS, K.kvm_regs())  # registers are not hidden by this
    vt.confidential = False
    assert snapshot(k, v) == before


def test_confidential_fpu_without_protected_state_does_nothing():
    k, vt, v = make(TYPE + 1)
    fpu = X.kvm_fpu()
    k.ioctl(v, X.KVM_GET_FPU, fpu)
    assert fpu.fcw == 0x37F
    vt.confidential = vt.protected = True
    k.ioctl(v, X.KVM_SET_FPU, X.kvm_fpu(fcw=0x27F))  # 0, nothing written
    k.ioctl(v, X.KVM_SET_REGS, K.kvm_regs(rip=0x1000))  # no protected state: allowed
    got = X.kvm_fpu(fcw=0x1234)
    k.ioctl(v, X.KVM_GET_FPU, got)
    assert bytes(got) == bytes(ctypes.sizeof(X.kvm_fpu))  # the kernel's zeroed buffer
    xs = X.kvm_xsave()
    ctypes.memset(ctypes.addressof(xs), 0xAA, ctypes.sizeof(xs))
    k.ioctl(v, X.KVM_GET_XSAVE, xs)
    assert bytes(xs) == bytes(ctypes.sizeof(xs))
    k.ioctl(v, X.KVM_SET_XSAVE, X.kvm_xsave())
    vt.confidential = False
    k.ioctl(v, X.KVM_GET_FPU, fpu)
    assert fpu.fcw == 0x37F
    k.close_all()


class MsrVm(PlainVm):
    type = TYPE + 3
    name = "KVM_X86_MSR_VM (test)"

    def __init__(self):
        self.calls = []

    def msr_allowed(self, vcpu, index, write, data):
        self.calls.append((index, write, data))
        return index != 0xC0000082 or not write


def test_msr_allowed_stops_the_loop_where_it_refuses():
    """msr_allowed is asked once per MSR before kmock's own rules; False ends __msr_io."""
    assert MsrVm.has_msr_hook and not PlainVm.has_msr_hook
    plugin = Plugin()
    vt = MsrVm()
    plugin.types[vt.type] = vt
    k = kmock.Kernel("linux-6.18", plugins=[plugin], platform="guarded")
    kvm = k.open("/dev/kvm", os.O_RDWR)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, vt.type)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    pat, lstar = 0x277, 0xC0000082
    assert k.ioctl(v, X.KVM_GET_MSRS, msrs_buf([(pat, 0), (lstar, 0)])) == 2
    buf = msrs_buf([(pat, 0x0007040600070406), (lstar, 0xFFFFFFFF81000000), (pat, 0)])
    assert k.ioctl(v, X.KVM_SET_MSRS, buf) == 1
    assert vt.calls == [(pat, False, 0), (lstar, False, 0), (pat, True, 0x0007040600070406),
                        (lstar, True, 0xFFFFFFFF81000000)]
    got = msrs_buf([(lstar, 0)])
    k.ioctl(v, X.KVM_GET_MSRS, got)
    assert msrs_values(got, 1) == [0]  # nothing written past the refusal
    k.close_all()


def test_a_protected_tsc_refuses_kvm_set_tsc_khz_before_recording_it(guarded):
    k, vt, v = guarded
    khz = k.ioctl(v, X.KVM_GET_TSC_KHZ, 0)
    vt.protected = vt.confidential = True
    k.ioctl(v, X.KVM_SET_TSC_KHZ, khz)  # protected state alone does not cover the TSC
    vt.tsc = True
    assert err(k, v, X.KVM_SET_TSC_KHZ, khz + 1000) == errno.EINVAL
    assert k.ioctl(v, X.KVM_GET_TSC_KHZ, 0) == khz
