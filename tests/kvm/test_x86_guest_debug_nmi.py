"""KVM_SET_GUEST_DEBUG (x86.c kvm_arch_vcpu_ioctl_set_guest_debug) and KVM_NMI
(kvm_vcpu_ioctl_nmi, process_nmi) on default VMs."""

import errno

from kmock.kvm import x86_state
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from .test_x86_vcpu_state import err, new_vcpu


def events(k, v):
    ev = X.kvm_vcpu_events()
    k.ioctl(v, X.KVM_GET_VCPU_EVENTS, ev)
    return ev


def test_control_is_stored_without_a_flag_check(k):
    _, vm, v = new_vcpu(k)
    for ctl in (0x10, 1 << 31, 3):
        assert k.ioctl(v, X.KVM_SET_GUEST_DEBUG, X.kvm_guest_debug(control=ctl)) == 0
    st = x86_state.state(k.vm(vm).vcpus[0])
    assert st.guest_debug == 3
    k.ioctl(v, X.KVM_SET_GUEST_DEBUG, X.kvm_guest_debug(control=2))  # no ENABLE: 0
    assert st.guest_debug == 0


def test_inject_queues_one_exception(k):
    _, _, v = new_vcpu(k)
    ctl = X.KVM_GUESTDBG_INJECT_DB | X.KVM_GUESTDBG_INJECT_BP
    assert k.ioctl(v, X.KVM_SET_GUEST_DEBUG, X.kvm_guest_debug(control=ctl)) == 0
    ev = events(k, v)
    assert (ev.exception.injected, ev.exception.pending, ev.exception.nr) == (1, 1, 1)
    assert err(k.ioctl, v, X.KVM_SET_GUEST_DEBUG,
               X.kvm_guest_debug(control=X.KVM_GUESTDBG_INJECT_BP)) == errno.EBUSY
    k.ioctl(v, X.KVM_SET_VCPU_EVENTS, X.kvm_vcpu_events())
    k.ioctl(v, X.KVM_SET_GUEST_DEBUG, X.kvm_guest_debug(control=X.KVM_GUESTDBG_INJECT_BP))
    ev = events(k, v)  # #BP is soft: GET_VCPU_EVENTS does not report it
    assert (ev.exception.injected, ev.exception.pending, ev.exception.nr) == (0, 0, 3)


def test_bad_pointer(k):
    _, _, v = new_vcpu(k)
    assert err(k.ioctl, v, X.KVM_SET_GUEST_DEBUG, 8) == errno.EFAULT


def test_nmi_pending_limit(k):
    _, _, v = new_vcpu(k)
    got = []
    for _ in range(3):
        assert k.ioctl(v, X.KVM_NMI, 0) == 0
        got.append(events(k, v).nmi.pending)
    assert got == [1, 2, 2]
    ev = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_NMI_PENDING)
    ev.nmi.masked = 1
    k.ioctl(v, X.KVM_SET_VCPU_EVENTS, ev)
    k.ioctl(v, X.KVM_NMI, 0)
    k.ioctl(v, X.KVM_NMI, 0)
    assert events(k, v).nmi.pending == 1


def test_nmi_with_irqchip(k):
    kvm = k.open("/dev/kvm", 2)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    v = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert k.ioctl(v, X.KVM_NMI, 0) == 0
    assert events(k, v).nmi.pending == 1
