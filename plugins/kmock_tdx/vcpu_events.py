"""The vCPU event ioctls on a TD vCPU, where the vt_* wrappers of arch/x86/kvm/vmx/main.c
(6.16-6.18) make x86.c's common code see a TD differently from a VMX vCPU. Each handler is
the core's (kmock.kvm.x86_vcpu) plus what the wrapper changes:

- ``vt_apic_init_signal_blocked``: true for a TD (the TDX module has no INIT/SIPI), so
  kvm_apic_init_sipi_allowed() is false and KVM_SET_MP_STATE of INIT_RECEIVED or
  SIPI_RECEIVED is -EINVAL (kvm_arch_vcpu_ioctl_set_mpstate).
- ``vt_get_nmi_mask`` / ``vt_get_interrupt_shadow``: false / 0 for a TD (KVM cannot read
  them), ``vt_set_nmi_mask`` / ``vt_set_interrupt_shadow``: nothing. KVM_GET_VCPU_EVENTS
  reports ``nmi.masked`` 0 and ``interrupt.shadow`` 0 whatever KVM_SET_VCPU_EVENTS gave,
  and process_nmi's limit of pending NMIs is 2 unless one is injected.
- KVM_NMI: kvm_inject_nmi queues it (KVM_GET_VCPU_EVENTS shows ``nmi.pending``) and
  kvm_vcpu_has_events() is true (MapGPA's RETRY); ``tdx_inject_nmi`` at the next entry
  writes TD_VCPU_PEND_NMI and clears nmi_pending (kmock: TdxVm.run_enter).
"""

import errno

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user, copy_to_user
from kmock.kvm import x86_vcpu
from kmock.kvm.x86_state import state as x86_state
from kmock.uapi import x86 as X

_INIT_SIPI = (X.KVM_MP_STATE_INIT_RECEIVED, X.KVM_MP_STATE_SIPI_RECEIVED)


def set_mp_state(f, arg):
    """KVM_SET_MP_STATE: the core's checks, with INIT/SIPI refused for a TD (the LAPIC of a
    TD vCPU is always in the kernel, so the lapic_in_kernel check before it never fails)."""
    f.vm.check_caller()
    value = copy_from_user(arg, X.kvm_mp_state).mp_state
    if value in _INIT_SIPI:
        raise oserror(errno.EINVAL)
    return x86_vcpu.set_mp_state(f, arg)


def get_vcpu_events(f, arg):
    """KVM_GET_VCPU_EVENTS: the core's, with nmi.masked and interrupt.shadow 0."""
    r = x86_vcpu.get_vcpu_events(f, arg)
    ev = copy_from_user(arg, X.kvm_vcpu_events)
    ev.nmi.masked = 0
    ev.interrupt.shadow = 0
    copy_to_user(arg, ev)
    return r


def set_vcpu_events(f, arg):
    """KVM_SET_VCPU_EVENTS: the core's; the NMI mask and the interrupt shadow are not
    written (vt_set_*), and pending NMIs are limited as an unmasked vCPU's."""
    ev = copy_from_user(arg, X.kvm_vcpu_events)
    r = x86_vcpu.set_vcpu_events(f, arg)
    st = x86_state(f.vcpu)
    st.nmi_masked = 0
    st.shadow = 0
    if ev.flags & X.KVM_VCPUEVENT_VALID_NMI_PENDING:
        st.nmi_pending = min(ev.nmi.pending, 1 if st.nmi_injected else 2)
    return r


def nmi(f, arg):
    """KVM_NMI (kvm_vcpu_ioctl_nmi): the core's queue, and an event pending for the vCPU."""
    r = x86_vcpu.nmi(f, arg)
    f.vcpu.arch.pending_event = True
    return r


def inject_pending_nmi(vcpu):
    """tdx_inject_nmi at entry: the queued NMI goes to the TDX module (nmi_pending 0)."""
    tv = vcpu.arch
    st = tv.x86
    if st is None:
        st = tv.x86 = x86_state(vcpu)  # (the look-up by id, once per vCPU)
    st.nmi_pending = 0
