"""A hypothesis state machine over populate, activation, guest accesses, RSI RIPAS changes,
VMM conversions, punches and DMA, against a per-page model of RIPAS x HIPAS x attribute.

The model is the reference's tables (§3.2-§3.4) written page by page in Python; the mock
works on runs. After every step the RTT, the granule table and the violations recorded
must match the model.
"""

import errno

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from kmock.uapi import kvm as K
from kmock_cca.rtt import RSI_CHANGE_DESTROYED, GranuleState, Hipas, RealmState, Ripas

from .conftest import cca_kernel
from .realm_vmm import PRIVATE, RAM, UNPROTECTED, P, RealmVmm

N = 8
EMPTY, RAM_, DESTROYED = Ripas.EMPTY, Ripas.RAM, Ripas.DESTROYED
pages = st.integers(0, N - 1)


class RealmMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.k = cca_kernel()
        self.vmm = RealmVmm(self.k)
        self.vmm.create_vgic()
        self.vmm.add_ram(N * P)
        self.vmm.create_vcpu(0)
        self.vmm.finish_vgic()
        self.ripas = [EMPTY] * N
        self.assigned = [False] * N
        self.private = [True] * N
        self.populated = [False] * N  # kvm_gmem_populate's "prepared" pages
        self.active = False
        self.dead = False
        self.destroyed_violations = 0

    def teardown(self):
        self.k.close_all()

    # --- helpers ---------------------------------------------------------------------
    def destroy(self, p, released, punched=False):
        if self.assigned[p]:
            if self.ripas[p] == RAM_ and not released:
                self.destroyed_violations += 1
            if self.ripas[p] == RAM_:
                self.ripas[p] = DESTROYED
            self.assigned[p] = False
        if punched:
            self.populated[p] = False  # guest_memfd forgets a page's "prepared" state

    def run(self):
        """KVM_RUN to the end of the guest's script (a stop: KVM_EXIT_INTR), or -errno."""
        return self.vmm.run_to_stop()

    # --- launch --------------------------------------------------------------------------
    @precondition(lambda self: not self.active and not self.dead)
    @rule(p=pages)
    def populate(self, p):
        r = 0
        try:
            self.vmm.populate(RAM + p * P, (b"p%d" % p).ljust(P, b"\0"))
        except OSError as e:
            r = e.errno
        if self.populated[p]:
            assert r == errno.EEXIST  # kvm_gmem_populate: prepared first, then the attribute
        elif not self.private[p]:
            assert r == errno.EINVAL
        else:
            assert r == 0
            self.assigned[p], self.ripas[p], self.populated[p] = True, RAM_, True

    @precondition(lambda self: not self.active and not self.dead)
    @rule()
    def activate(self):
        r = self.run()
        if DESTROYED in self.ripas:
            assert r == -errno.ENXIO  # INIT_RIPAS stops at a DESTROYED entry (kmock choice)
            self.dead = True
            return
        assert r == K.KVM_EXIT_INTR
        self.active = True
        self.ripas = [RAM_ if x == EMPTY else x for x in self.ripas]

    @precondition(lambda self: self.dead)
    @rule(p=pages)
    def dead_realm_refuses(self, p):
        assert self.run() == -errno.EINVAL  # kvm_rec_pre_enter: not ACTIVE
        try:
            self.vmm.populate(RAM + p * P, bytes(P))
            raise AssertionError("POPULATE of a DEAD realm succeeded")
        except OSError as e:
            assert e.errno == errno.ENXIO

    # --- the realm -------------------------------------------------------------------------
    @precondition(lambda self: self.active)
    @rule(p=pages, alias=st.booleans())
    def access(self, p, alias):
        g = self.vmm.guest()
        gpa = RAM + p * P
        a = g.write(gpa | UNPROTECTED if alias else gpa, b"w")
        r = self.run()
        if alias:
            assert r == (K.KVM_EXIT_INTR if not self.private[p] else -errno.EFAULT)
        elif self.ripas[p] == EMPTY:
            assert r == K.KVM_EXIT_INTR and a.aborted  # SEA
        elif self.ripas[p] == DESTROYED:
            assert r == -errno.EINTR
        elif not self.private[p]:
            assert r == -errno.EFAULT
        else:
            assert r == K.KVM_EXIT_INTR and a.done and not a.aborted
            self.assigned[p] = True
        g.clear()

    @precondition(lambda self: self.active)
    @rule(lo=pages, n=st.integers(1, 3), ram=st.booleans(), cd=st.booleans(),
          convert=st.booleans())
    def ipa_state_set(self, lo, n, ram, cd, convert):
        hi = min(N, lo + n)
        target = RAM_ if ram else EMPTY
        g = self.vmm.guest()
        s = g.cca.ipa_state_set(RAM + lo * P, RAM + hi * P, int(target),
                                RSI_CHANGE_DESTROYED if cd else 0)
        assert self.run() == -errno.EFAULT
        if convert:
            self.vmm.set_attributes(RAM + lo * P, (hi - lo) * P, PRIVATE if ram else 0)
            for p in range(lo, hi):
                if not ram and self.private[p]:
                    self.destroy(p, released=True)
                self.private[p] = ram
        assert self.run() == K.KVM_EXIT_INTR
        reached = lo
        for p in range(lo, hi):
            if self.ripas[p] == DESTROYED and not cd:
                break
            self.ripas[p] = target
            if target == EMPTY:
                self.assigned[p] = False
            reached = p + 1
        assert s.result == (0, RAM + reached * P, 0)
        g.clear()

    # --- the host --------------------------------------------------------------------------
    @precondition(lambda self: not self.dead)
    @rule(p=pages)
    def punch(self, p):
        self.vmm.k.fallocate(self.vmm.gmem, 3, p * P, P)
        self.destroy(p, released=False, punched=True)

    @precondition(lambda self: not self.dead)
    @rule(p=pages, private=st.booleans())
    def convert(self, p, private):
        self.vmm.set_attributes(RAM + p * P, P, PRIVATE if private else 0)
        if not private and self.private[p]:
            self.destroy(p, released=False)
        self.private[p] = private

    @precondition(lambda self: not self.dead)
    @rule(p=pages)
    def dma(self, p):
        vm = self.vmm.vm_obj
        inode = self.k.file(self.vmm.gmem).inode
        why = vm.vmtype.dma_access(vm, inode, p, p + 1, True)
        assert (why is not None) == self.assigned[p]

    # --- invariants ---------------------------------------------------------------------------
    @invariant()
    def rtt_matches(self):
        realm = self.vmm.realm
        if realm is None or self.vmm.vm_obj.arch.state == RealmState.DEAD:
            return
        got = [(e.hipas == Hipas.ASSIGNED, e.ripas)
               for e in (realm.entry(RAM + p * P) for p in range(N))]
        assert got == list(zip(self.assigned, self.ripas))
        g = self.vmm.vm_obj.vmtype.granules
        inode = self.k.file(self.vmm.gmem).inode
        data = [g.state(inode.pfn(p) << 12) == GranuleState.DATA for p in range(N)]
        assert data == self.assigned

    @invariant()
    def violations_match(self):
        assert len(self.k.violations.of_kind("realm_data_destroyed")) == self.destroyed_violations


TestRealm = RealmMachine.TestCase
TestRealm.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
