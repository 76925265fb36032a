"""Helpers of the arm64 tests (and the CCA tests, which run arm64 vCPUs)."""

import errno
import threading

from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K


def psci_vcpu(k, vm_fd, vcpu_id=0):
    """KVM_CREATE_VCPU then KVM_ARM_VCPU_INIT (generic v8 target, PSCI 0.2): the vCPU fd."""
    fd = k.ioctl(vm_fd, K.KVM_CREATE_VCPU, vcpu_id)
    init = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
    init.features[0] = 1 << A.KVM_ARM_VCPU_PSCI_0_2
    k.ioctl(fd, A.KVM_ARM_VCPU_INIT, init)
    return fd


def run_exit(k, fd):
    """KVM_RUN on vCPU ``fd`` as a VMM sees it: the exit reason written into kvm_run.

    KVM_RUN failing with EINTR (a signal for the vCPU's thread: kmock's ``guest.stop()``,
    ``vcpu.kick()``, ``run.immediate_exit``) gives KVM_EXIT_INTR, after checking that
    kvm_run says so too (kvm_handle_signal_exit); any other errno raises."""
    run = k.file(fd).vcpu.run
    try:
        k.ioctl(fd, K.KVM_RUN, 0)
    except OSError as e:
        if e.errno != errno.EINTR:
            raise
        assert run.exit_reason == K.KVM_EXIT_INTR, run.exit_reason
        return K.KVM_EXIT_INTR
    return run.exit_reason


#: long enough for a KVM_RUN that should block to be seen blocked (kmock polls every 5 ms)
SETTLE = 0.05


class Runner(threading.Thread):
    """KVM_RUN in another thread (the VMM's vCPU thread): ``result`` is the exit reason
    (run_exit) or the OSError."""

    def __init__(self, k, fd):
        super().__init__(daemon=True)
        self.k, self.fd, self.result = k, fd, None
        self.start()

    def run(self):
        try:
            self.result = run_exit(self.k, self.fd)
        except OSError as e:
            self.result = e

    def blocked(self):
        self.join(SETTLE)
        return self.is_alive()

    def outcome(self):
        self.join(5)
        assert not self.is_alive(), "KVM_RUN did not return"
        return self.result
