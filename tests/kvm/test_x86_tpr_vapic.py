"""KVM_TPR_ACCESS_REPORTING and KVM_SET_VAPIC_ADDR (kmock.kvm.x86_lapic) on linux-6.18.

Confirmed on a 6.18.44 host by the conformance scenario x86_vcpu_tpr_vapic; these tests
pin what it cannot see (the values kept) and the check order by name.
"""

import errno
import mmap

import ctypes

from kmock.kvm import x86_state
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._util import create_vm, err

P = 4096


def split_vm_with_vcpu(k):
    kvm, vm = create_vm(k)
    cap = K.kvm_enable_cap(cap=121)
    cap.args[0] = 24
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    return vm, k.ioctl(vm, K.KVM_CREATE_VCPU, 0)


def test_tpr_access_reporting_is_kept_and_copied_back(k):
    _, vm = create_vm(k)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    t = X86.kvm_tpr_access_ctl(enabled=7)
    t.reserved[3] = 9
    assert k.ioctl(cpu, X86.KVM_TPR_ACCESS_REPORTING, t) == 0
    assert (t.enabled, t.reserved[3]) == (7, 9)
    st = x86_state.state(k.file(cpu).vcpu)
    assert st.tpr_access_reporting is True
    assert err(k.ioctl, cpu, X86.KVM_TPR_ACCESS_REPORTING, X86.kvm_tpr_access_ctl(flags=1)) == errno.EINVAL
    assert st.tpr_access_reporting is True  # the failed call changed nothing
    k.ioctl(cpu, X86.KVM_TPR_ACCESS_REPORTING, X86.kvm_tpr_access_ctl(enabled=0))
    assert st.tpr_access_reporting is False


def test_vapic_needs_the_in_kernel_lapic_before_the_copy(k):
    _, vm = create_vm(k)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.ioctl, cpu, X86.KVM_SET_VAPIC_ADDR, 0) == errno.EINVAL  # not EFAULT
    _, cpu = split_vm_with_vcpu(k)
    assert err(k.ioctl, cpu, X86.KVM_SET_VAPIC_ADDR, 0) == errno.EFAULT


def test_vapic_address_must_lie_in_memslots(k):
    vm, cpu = split_vm_with_vcpu(k)
    mem = mmap.mmap(-1, 2 * P)
    uaddr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
        slot=0, guest_phys_addr=0x100000, memory_size=2 * P, userspace_addr=uaddr))

    def vapic(addr):
        return k.ioctl(cpu, X86.KVM_SET_VAPIC_ADDR, X86.kvm_vapic_addr(vapic_addr=addr))

    from kmock.kvm import x86_lapic

    lapic = x86_lapic.lapic(k.file(cpu).vcpu)
    assert vapic(0x100FFE) == 0 and lapic.vapic_addr == 0x100FFE  # across a page: fine
    assert err(vapic, 0x101FFE) == errno.EINVAL  # across the memslot's end
    assert err(vapic, 0x300000) == errno.EINVAL
    assert lapic.vapic_addr == 0x100FFE  # unchanged by the failures
    assert vapic(0) == 0 and lapic.vapic_addr == 0
    del mem
