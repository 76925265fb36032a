"""A hypothesis state machine over the whole SNP path, driven through ioctls and scripted
guests: launch updates, LAUNCH_FINISH, guest PSC (the VMM converting as QEMU does),
PVALIDATE, C-bit reads, host punches and DMA checks, against a per-page model of the RMP
(assigned, validated) and of guest_memfd (prepared)."""

import errno

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import kmock
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from .snpenv import GPA, P, Snp

N = 12
pages = st.integers(0, N - 1)
#: steps per example: a guest that terminates is replaced by a spare vCPU, created before
#: LAUNCH_FINISH (a vCPU created after it has no measured VMSA and cannot run)
STEPS = 30


class SnpMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.s = Snp(npages=N, vcpus=STEPS + 1)
        s = self.s
        assert s.init2()[1] == 0
        s.create_vcpus()
        assert s.start()[1] == 0
        s.k.ioctl(s.vm, K.KVM_ENABLE_CAP, K.kvm_enable_cap(
            cap=K.KVM_CAP_EXIT_HYPERCALL, args=(1 << K.KVM_HC_MAP_GPA_RANGE,)))
        self.private = [False] * N
        self.prepared = [False] * N
        self.assigned = [False] * N
        self.validated = [False] * N
        self.finished = False
        self.vcpu = 0

    # --- the VMM -------------------------------------------------------------------------

    def _convert(self, i, private):
        self.s.set_private(i, 1, private)
        self.private[i] = private
        if not private:
            self._punch(i)

    def _punch(self, i):
        self.s.k.fallocate(self.s.gmem, kmock.file.FALLOC_FL_PUNCH_HOLE |
                           kmock.file.FALLOC_FL_KEEP_SIZE, i * P, P)
        self.prepared[i] = self.assigned[i] = self.validated[i] = False

    @rule(i=pages, private=st.booleans())
    def vmm_converts(self, i, private):
        self._convert(i, private)

    @rule(i=pages)
    def host_punches(self, i):
        self._punch(i)

    @rule(i=pages, n=st.integers(1, 4))
    def launch_update(self, i, n):
        u, cmd, e = self.s.update(i, n)
        asked = n
        n = min(n, N - i)  # kvm_gmem_populate clamps to the memslot
        done = 0
        err = 0
        for j in range(i, i + n):
            if self.prepared[j] or self.assigned[j]:
                err = errno.EEXIST
                break
            if not self.private[j]:
                err = errno.EINVAL
                break
            if self.finished:
                err = errno.EIO  # the firmware refuses: guest RUNNING
                break
            self.prepared[j] = self.assigned[j] = self.validated[j] = True
            done += 1
        if done == 0 and err:
            assert e == errno.EIO
            assert cmd.error == (S.SEV_RET_INVALID_GUEST_STATE if err == errno.EIO else 0)
        else:
            assert e == 0 and u.len == (asked - done) * P

    @precondition(lambda self: not self.finished)
    @rule()
    def finish(self):
        assert self.s.finish()[1] == 0
        self.finished = True

    # --- the guest (after FINISH) --------------------------------------------------------------

    def _run(self):
        """Run the guest, answering PSC exits as the VMM does; returns (errno, exit)."""
        s = self.s
        while True:
            err, run = s.run(self.vcpu)
            if err or run.exit_reason != K.KVM_EXIT_HYPERCALL:
                return err, run.exit_reason
            hc = run.hypercall
            for g in range(hc.args[1]):
                self._convert(((hc.args[0] - GPA) >> 12) + g,
                              bool(hc.args[2] & K.KVM_MAP_GPA_RANGE_ENCRYPTED))
            hc.ret = 0

    def _new_vcpu(self):
        self.vcpu += 1  # the next spare vCPU

    def _guest(self):
        return self.s.vcpu(self.vcpu).guest

    @precondition(lambda self: self.finished)
    @rule(i=pages, private=st.booleans())
    def guest_psc(self, i, private):
        a = self._guest().snp.psc_msr(GPA + i * P, private)
        self._guest().hlt()
        err, reason = self._run()
        assert err == 0 and a.result == S.GHCB_MSR_PSC_RESP and self.private[i] == private

    @precondition(lambda self: self.finished)
    @rule(i=pages, validate=st.booleans())
    def guest_pvalidate(self, i, validate):
        a = self._guest().snp.pvalidate(GPA + i * P, validate)
        self._guest().hlt()
        err, reason = self._run()
        if not self.private[i]:
            assert err == errno.EFAULT and reason == K.KVM_EXIT_MEMORY_FAULT
            self._guest().clear()
            return
        if not self.prepared[i]:
            self.prepared[i] = self.assigned[i] = True
        expect = S.PVALIDATE_FAIL_NOUPDATE if self.validated[i] == validate else 0
        assert err == 0 and a.result == expect
        self.validated[i] = validate

    @precondition(lambda self: self.finished)
    @rule(i=pages)
    def guest_private_read(self, i):
        a = self._guest().read(GPA + i * P, 8, private=True)
        self._guest().hlt()
        err, reason = self._run()
        if not self.private[i]:
            assert err == errno.EFAULT and reason == K.KVM_EXIT_MEMORY_FAULT
            self._guest().clear()
            return
        if not self.prepared[i]:
            self.prepared[i] = self.assigned[i] = True
        if self.validated[i]:
            assert a.done and reason == K.KVM_EXIT_HLT
        else:
            assert reason == K.KVM_EXIT_SYSTEM_EVENT and not a.done
            assert self.s.k.violations.of_kind("rmp_not_validated")
            self._new_vcpu()

    @rule(i=pages, write=st.booleans())
    def dma(self, i, write):
        vm = self.s.kvm_vm
        why = vm.vmtype.dma_access(vm, self.s.inode, i, i + 1, write)
        assert (why is not None) == self.assigned[i]

    @invariant()
    def rmp_matches_model(self):
        s = self.s
        for i in range(N):
            e = s.rmp.entry(s.inode.pfn(i))
            assert (e.assigned, e.validated) == (self.assigned[i], self.validated[i]), (i, e)
            if e.assigned:
                assert e.gpa == GPA + i * P and e.owner == "guest"

    def teardown(self):
        self.s.k.close_all()


SnpMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=STEPS, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestSnpMachine = SnpMachine.TestCase
