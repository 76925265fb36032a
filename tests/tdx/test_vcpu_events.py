"""KVM_SET_MP_STATE, KVM_GET/SET_VCPU_EVENTS and KVM_NMI on a TD vCPU: x86.c's common code
as the vt_* wrappers of arch/x86/kvm/vmx/main.c (6.16-6.18) make it behave for a TD
(kmock_tdx.vcpu_events):

- vt_apic_init_signal_blocked() is true for a TD, so kvm_apic_init_sipi_allowed() is false
  and KVM_SET_MP_STATE(INIT_RECEIVED / SIPI_RECEIVED) is -EINVAL
  (kvm_arch_vcpu_ioctl_set_mpstate); UNINITIALIZED, HALTED, RUNNABLE are accepted.
- vt_get_nmi_mask() / vt_get_interrupt_shadow() are false / 0 for a TD and the setters do
  nothing: KVM_GET_VCPU_EVENTS reports nmi.masked = 0 and interrupt.shadow = 0.
- KVM_NMI queues an NMI that KVM_GET_VCPU_EVENTS shows as nmi.pending until the next entry
  (tdx_inject_nmi clears nmi_pending).
"""

import errno

import pytest

from kmock.uapi import x86 as X

from ._td import Td, err



def _events(k, fd):
    ev = X.kvm_vcpu_events()
    k.ioctl(fd, X.KVM_GET_VCPU_EVENTS, ev)
    return ev


@pytest.mark.parametrize("mp, want", [
    (X.KVM_MP_STATE_INIT_RECEIVED, errno.EINVAL),
    (X.KVM_MP_STATE_SIPI_RECEIVED, errno.EINVAL),
    (X.KVM_MP_STATE_UNINITIALIZED, 0),
    (X.KVM_MP_STATE_HALTED, 0),
    (X.KVM_MP_STATE_RUNNABLE, 0),
    (99, errno.EINVAL),
])
def test_set_mp_state(tdx_kernel, mp, want):
    k = tdx_kernel()
    t = Td(k).launch()
    assert err(k.ioctl, t.vcpu, X.KVM_SET_MP_STATE, X.kvm_mp_state(mp)) == want
    got = X.kvm_mp_state(0xFF)
    k.ioctl(t.vcpu, X.KVM_GET_MP_STATE, got)
    assert got.mp_state == (mp if not want else X.KVM_MP_STATE_RUNNABLE)


def test_nmi_mask_and_interrupt_shadow_read_zero(tdx_kernel):
    k = tdx_kernel()
    t = Td(k).launch()
    ev = X.kvm_vcpu_events()
    ev.flags = X.KVM_VCPUEVENT_VALID_SHADOW | X.KVM_VCPUEVENT_VALID_NMI_PENDING
    ev.interrupt.shadow = 1
    ev.nmi.masked = 1
    ev.nmi.pending = 2
    k.ioctl(t.vcpu, X.KVM_SET_VCPU_EVENTS, ev)
    got = _events(k, t.vcpu)
    assert (got.interrupt.shadow, got.nmi.masked) == (0, 0)
    assert got.nmi.pending == 2  # process_nmi's limit of an unmasked vCPU


def test_kvm_nmi_is_pending_until_the_next_entry(tdx_kernel):
    k = tdx_kernel()
    t = Td(k).launch()
    k.ioctl(t.vcpu, X.KVM_NMI, 0)
    assert _events(k, t.vcpu).nmi.pending == 1
    assert t.vmobj.vcpus[0].arch.pending_event
    t.run_to_stop()
    assert _events(k, t.vcpu).nmi.pending == 0
    assert not t.vmobj.vcpus[0].arch.pending_event
