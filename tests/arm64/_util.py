"""Helpers of the arm64 tests (and the CCA tests, which run arm64 vCPUs)."""

import errno

from kmock.uapi import kvm as K


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
