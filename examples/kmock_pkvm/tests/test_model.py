"""A hypothesis state machine: guest accesses, MEM_SHARE / MEM_UNSHARE served by the
VMM, conversions the guest did not ask for, host reads and PUNCH_HOLE, against a model
of (guest_memfd attribute, hypervisor owner, reclaimed) per page."""

import errno

from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import kmock
import kmock_pkvm
from kmock.uapi import kvm as K
from kmock_pkvm import uapi as A
from pvm import GPA, P, Pvm

N = 4
HOST, GUEST, SHARED = "host", "guest", "shared"
page = st.integers(0, N - 1)


class PkvmMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.k = kmock.Kernel("linux-arm64-pkvm", only_plugins=[kmock_pkvm])
        self.pvm = Pvm(self.k, npages=N)
        self.private = [True] * N
        self.owner = [HOST] * N
        self.reclaimed = [False] * N
        self.data = [bytes(4)] * N

    def teardown(self):
        self.k.close_all()

    @rule(i=page, value=st.binary(min_size=4, max_size=4))
    def guest_write(self, i, value):
        g = self.pvm.guest
        w = g.write(GPA + i * P, value)
        g.stop()  # (the guest's end: a signal for the VMM's thread)
        try:
            reason = self.pvm.run_exit()
        except OSError as e:
            assert e.errno == errno.EFAULT and self.reclaimed[i]
            assert self.k.violations[-1].kind == "pkvm_access_reclaimed"
            g.clear()
            return
        assert not self.reclaimed[i] and reason == K.KVM_EXIT_INTR and w.done
        if self.private[i] and self.owner[i] == HOST:
            self.owner[i] = GUEST
        self.data[i] = value

    @rule(i=page, share=st.booleans())
    def hypercall(self, i, share):
        g = self.pvm.guest.pkvm
        call = g.mem_share(GPA + i * P) if share else g.mem_unshare(GPA + i * P)
        self.pvm.guest.hlt()
        self.pvm.guest.stop()
        assert self.pvm.serve() == K.KVM_EXIT_INTR
        valid = self.owner[i] in ((HOST, GUEST) if share else (SHARED,))
        assert call.result == (A.SMCCC_RET_SUCCESS if valid else A.SMCCC_RET_INVALID_PARAMETER)
        assert bool(call.exits) == valid
        if valid:
            self.owner[i] = SHARED if share else GUEST
            self.private[i] = not share

    @rule(i=page, private=st.booleans())
    def vmm_converts(self, i, private):
        self.pvm.convert(i, private)
        self.private[i] = private

    @rule(i=page)
    def host_reads(self, i):
        n = len(self.k.violations)
        try:
            got = bytes(self.pvm.m[i * P:i * P + 4])
        except kmock.SigBus:
            assert self.private[i] or self.owner[i] == GUEST
            if not self.private[i]:
                assert self.k.violations[n].kind == "host_access_fault"
            return
        assert not self.private[i] and self.owner[i] != GUEST
        assert got == self.data[i]

    @rule(i=page)
    def punch(self, i):
        n = len(self.k.violations)
        self.k.fallocate(self.pvm.gmem, 3, i * P, P)
        was = self.owner[i]
        assert [v.kind for v in self.k.violations[n:]] == (["pkvm_reclaim"] if was == GUEST else [])
        self.reclaimed[i] |= was == GUEST
        self.owner[i] = HOST
        self.data[i] = bytes(4)

    @invariant()
    def owners_match(self):
        arch = self.k.vm(self.pvm.vm).arch
        inode = self.k.file(self.pvm.gmem).inode
        names = {0: HOST, 1: GUEST, 2: SHARED}
        assert [names[arch.owner.state(inode.pfn(i))] for i in range(N)] == self.owner


TestPkvm = PkvmMachine.TestCase
TestPkvm.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
