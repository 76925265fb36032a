"""The TD's TSC frequency: kvm->arch.default_tsc_khz (the VM-level KVM_SET_TSC_KHZ, or the
host's rate) goes to TD_PARAMS at KVM_TDX_INIT_VM, in 25 MHz units; the TDX module checks
its range; the TSC is fixed from then on.

Sources: Linux 6.16-6.18 arch/x86/kvm/vmx/tdx.c ``setup_tdparams``:
``td_params->tsc_frequency = TDX_TSC_KHZ_TO_25MHZ(kvm->arch.default_tsc_khz)`` (tdx_arch.h:
kHz / 25000; no range check in KVM) and ``__tdx_td_init``: a TDH.MNG.INIT status of
TDX_OPERAND_INVALID is -EINVAL with ``hw_error`` = the status. intel/tdx-module
``tdh_mng_init.c``: ``tsc_frequency`` (u16) outside [VIRT_TSC_FREQUENCY_MIN = 4,
VIRT_TSC_FREQUENCY_MAX = 400] is ``api_error_with_operand_id(TDX_OPERAND_INVALID,
OPERAND_ID_TSC_FREQUENCY = 70)``. x86.c: the VM ioctl KVM_SET_TSC_KHZ is EINVAL once a vCPU
was created; the vCPU ioctl is EINVAL for guest_tsc_protected (every TD vCPU); a vCPU's
KVM_GET_TSC_KHZ is virtual_tsc_khz, set from default_tsc_khz at KVM_CREATE_VCPU
(kvm_arch_vcpu_create), not rounded.
"""

import ctypes
import errno

import pytest

from kmock.uapi import kvm as K
from kmock.uapi import tdx as T
from kmock.uapi import x86 as X

from ._td import Td, cmd, init_vm_arg, err

ENC = K.KVM_MEMORY_ENCRYPT_OP
BAD_TSC = T.TDX_OPERAND_INVALID | 70



def _td(k):
    t = Td(k)
    t.capabilities()
    t.split_irqchip()
    return t


def test_the_host_rate_by_default(tdx_kernel):
    k = tdx_kernel()
    t = _td(k)
    t.init_vm()
    assert t.td.tsc_khz == 2_100_000


@pytest.mark.parametrize("khz, td_khz", [
    (2_012_345, 2_000_000),     # rounded down to 25 MHz
    (100_000, 100_000),         # 4 units: the minimum
    (124_999, 100_000),
    (10_000_000, 10_000_000),   # 400 units: the maximum
    (10_024_999, 10_000_000),
    (65540 * 25_000, 100_000),  # TD_PARAMS.TSC_FREQUENCY is a u16: 65540 wraps to 4
])
def test_vm_set_tsc_khz_before_init_vm_sets_the_td_rate(tdx_kernel, khz, td_khz):
    k = tdx_kernel()
    t = _td(k)
    k.ioctl(t.vm, X.KVM_SET_TSC_KHZ, khz)
    c = t.init_vm()
    assert c.hw_error == 0 and t.td.tsc_khz == td_khz


@pytest.mark.parametrize("khz", [99_999, 25_000, 10_025_000, 65536 * 25_000])
def test_a_rate_the_module_refuses_is_einval_with_hw_error(tdx_kernel, khz):
    """Refused inside TDH.MNG.INIT: EINVAL, hw_error = OPERAND_INVALID | 70, the TD stays
    UNINITIALIZED (no vCPU can be created: EIO); a valid rate then works."""
    k = tdx_kernel()
    t = _td(k)
    k.ioctl(t.vm, X.KVM_SET_TSC_KHZ, khz)
    arg = init_vm_arg()
    c = cmd(T.KVM_TDX_INIT_VM, ctypes.addressof(arg))
    assert err(k.ioctl, t.vm, ENC, c) == errno.EINVAL
    assert c.hw_error == BAD_TSC
    assert t.td.state == "UNINITIALIZED" and t.td.tsc_khz is None
    assert err(k.ioctl, t.vm, K.KVM_CREATE_VCPU, 0) == errno.EIO
    k.ioctl(t.vm, X.KVM_SET_TSC_KHZ, 0)  # 0: the host's rate
    t.init_vm()
    assert t.td.tsc_khz == 2_100_000


def test_the_rate_is_fixed_after_init_vm(tdx_kernel):
    """A VM-level KVM_SET_TSC_KHZ between INIT_VM and the first vCPU succeeds but no longer
    reaches the TD; the vCPU created then reports it anyway (virtual_tsc_khz); after that
    the VM ioctl is EINVAL and the vCPU ioctl is EINVAL (guest_tsc_protected)."""
    k = tdx_kernel()
    t = _td(k)
    k.ioctl(t.vm, X.KVM_SET_TSC_KHZ, 2_000_000)
    t.init_vm()
    k.ioctl(t.vm, X.KVM_SET_TSC_KHZ, 3_000_000)
    assert k.ioctl(t.vm, X.KVM_GET_TSC_KHZ, 0) == 3_000_000
    t.create_vcpus()
    assert t.td.tsc_khz == 2_000_000
    assert k.ioctl(t.vcpu, X.KVM_GET_TSC_KHZ, 0) == 3_000_000
    assert err(k.ioctl, t.vm, X.KVM_SET_TSC_KHZ, 2_000_000) == errno.EINVAL
    assert err(k.ioctl, t.vcpu, X.KVM_SET_TSC_KHZ, 2_000_000) == errno.EINVAL
    assert k.ioctl(t.vcpu, X.KVM_GET_TSC_KHZ, 0) == 3_000_000


def test_a_tdx_host_has_tsc_scaling(tdx_kernel):
    """linux-6.18-tdx: KVM_CAP_TSC_CONTROL / KVM_CAP_VM_TSC_CONTROL are 1, and the VM ioctl
    refuses only rates from max_guest_tsc_khz (0xffffffff) up."""
    k = tdx_kernel()
    t = _td(k)
    assert k.ioctl(t.vm, K.KVM_CHECK_EXTENSION, 60) == 1
    assert k.ioctl(t.vm, K.KVM_CHECK_EXTENSION, 214) == 1
    assert err(k.ioctl, t.vm, X.KVM_SET_TSC_KHZ, 0xFFFFFFFF) == errno.EINVAL
    k.ioctl(t.vm, X.KVM_SET_TSC_KHZ, 0xFFFFFFFE)
