"""What the ``kmock demo`` VMMs share: the story they tell and an x86 run loop.

The demos (examples/vmm_demo.py and each architecture plugin's ``demo.py``, offered
under the ``kmock.demos`` entry-point group) are small VMMs written against the
syscall API. Their run loop is the one a confidential VMM has on x86 (QEMU's
kvm_cpu_exec and kvm_convert_memory, the KVM selftests' host loops): KVM_RUN until
the guest halts, converting memory when the guest asks (a KVM_HC_MAP_GPA_RANGE exit,
which TDX's MapGPA and SNP's page-state changes become) or when KVM_RUN fails with
EFAULT and a KVM_EXIT_MEMORY_FAULT exit. Where the LAPIC is in the kernel (every TD:
TDX needs the split irqchip) a HLT never leaves KVM_RUN; the loop ends there when the
VMM signals its vCPU thread: KVM_RUN fails with EINTR, exit_reason KVM_EXIT_INTR (QEMU's
kvm_cpu_exec leaves its loop on -EINTR).
"""

import errno
import os

from ..uapi import kvm as K

PAGE = 4096


class Story:
    """``say(line)`` prints a line and keeps it: a demo returns ``(kernel, story.lines)``."""

    def __init__(self, out=print):
        self.out = out
        self.lines = []

    def __call__(self, line):
        self.lines.append(line)
        self.out(line)

    def violations(self, kernel):
        """Tell what kmock recorded as going wrong."""
        self(f"what went wrong: {len(kernel.violations)} violation(s) recorded")
        for v in kernel.violations:
            self(f"  {v}")


def run_until_halt(kernel, vcpu_fd, run, convert, say, hypercall="MAP_GPA_RANGE",
                   max_exits=64):
    """KVM_RUN ``vcpu_fd`` until KVM_EXIT_HLT, KVM_EXIT_SYSTEM_EVENT or, for a guest that
    halts in the kernel, a signal (EINTR: KVM_EXIT_INTR); the exit reason is returned.

    ``run`` is the vCPU's mapped ``kvm_run``; ``convert(gpa, size, private)`` is the
    VMM's conversion. A MAP_GPA_RANGE hypercall is converted and answered (0, or
    -KVM_EINVAL when the conversion fails, as QEMU answers); a KVM_EXIT_MEMORY_FAULT is
    converted and the vCPU re-entered. Any other failure of KVM_RUN is raised.
    ``hypercall`` names the hypercall in the story (e.g. "MapGPA" for a TD).
    """
    for _ in range(max_exits):
        try:
            kernel.ioctl(vcpu_fd, K.KVM_RUN, 0)
        except OSError as e:
            if e.errno == errno.EINTR and run.exit_reason == K.KVM_EXIT_INTR:
                say("  KVM_RUN: EINTR (KVM_EXIT_INTR): the guest halted in the kernel, the "
                    "VMM signalled its vCPU thread")
                return K.KVM_EXIT_INTR
            if e.errno != errno.EFAULT or run.exit_reason != K.KVM_EXIT_MEMORY_FAULT:
                raise
            mf = run.memory_fault
            private = bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
            say(f"  exit MEMORY_FAULT gpa {mf.gpa:#x}: convert to "
                f"{'private' if private else 'shared'}")
            convert(mf.gpa, mf.size, private)
            continue
        reason = run.exit_reason
        if reason == K.KVM_EXIT_HLT:
            say("  exit HLT: the guest is done")
            return reason
        if reason == K.KVM_EXIT_SYSTEM_EVENT:
            say(f"  exit SYSTEM_EVENT type {run.system_event.type}: the guest asked to be "
                f"terminated")
            return reason
        if reason == K.KVM_EXIT_HYPERCALL and run.hypercall.nr == K.KVM_HC_MAP_GPA_RANGE:
            hc = run.hypercall
            gpa, npages = hc.args[0], hc.args[1]
            private = bool(hc.args[2] & K.KVM_MAP_GPA_RANGE_ENCRYPTED)
            say(f"  exit HYPERCALL {hypercall} gpa {gpa:#x} + {npages} page(s) -> "
                f"{'private' if private else 'shared'}")
            try:
                convert(gpa, npages * PAGE, private)
                hc.ret = 0
            except OSError as e:
                say(f"    conversion failed: {os.strerror(e.errno)}")
                hc.ret = -K.KVM_EINVAL & ((1 << 64) - 1)
            continue
        if reason == K.KVM_EXIT_IO:
            continue
        raise RuntimeError(f"unexpected exit {reason}")
    raise RuntimeError(f"the guest did not halt within {max_exits} exits")
