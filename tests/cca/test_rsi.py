"""The guest side: RSI_IPA_STATE_SET through KVM_EXIT_MEMORY_FAULT, RTT_SET_RIPAS progress
on the next KVM_RUN, partial progress and REJECT (docs/arch/cca.md §4), RSI_IPA_STATE_GET,
the unprotected alias and lazy backing (§5)."""

import errno

import pytest

from kmock.uapi import kvm as K
from kmock_cca.rtt import (RSI_ACCEPT, RSI_CHANGE_DESTROYED, RSI_REJECT, Hipas, Ripas,
                           RsiStatus)

from .conftest import cca_kernel
from .realm_vmm import RAM, UNPROTECTED, P, RealmVmm

EMPTY, RAM_ = int(Ripas.EMPTY), int(Ripas.RAM)
OK = int(RsiStatus.SUCCESS)


@pytest.fixture
def vmm(k):
    v = RealmVmm(k).boot(size=16 * P)
    assert v.run_to_stop() == K.KVM_EXIT_INTR  # activate
    return v


def exit_of(vmm):
    run = vmm.kvm_run()
    mf = run.memory_fault
    return run.exit_reason, mf.gpa, mf.size, mf.flags


def test_share_then_accept(vmm):
    s = vmm.guest().cca.ipa_state_set(RAM + 4 * P, RAM + 8 * P, EMPTY, RSI_CHANGE_DESTROYED)
    vmm.guest().write(RAM + 4 * P, b"x")  # touched first, so it is mapped
    assert vmm.run() == -errno.EFAULT
    assert exit_of(vmm) == (K.KVM_EXIT_MEMORY_FAULT, RAM + 4 * P, 4 * P, 0)
    assert not s.done
    vmm.convert(RAM + 4 * P, 4 * P, private=False)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s.result == (OK, RAM + 8 * P, RSI_ACCEPT)
    assert vmm.realm.entry(RAM + 5 * P).ripas == Ripas.EMPTY
    assert vmm.k.violations.of_kind("realm_data_destroyed") == []  # the realm released it


def test_private_request_flags_and_lazy_backing(vmm):
    g = vmm.guest()
    g.cca.ipa_state_set(RAM + 8 * P, RAM + 10 * P, EMPTY, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    vmm.convert(RAM + 8 * P, 2 * P, private=False)
    s = g.cca.ipa_state_set(RAM + 8 * P, RAM + 10 * P, RAM_)
    assert vmm.run() == -errno.EFAULT
    assert exit_of(vmm) == (K.KVM_EXIT_MEMORY_FAULT, RAM + 8 * P, 2 * P,
                            K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
    vmm.convert(RAM + 8 * P, 2 * P, private=True)
    w = g.write(RAM + 9 * P, b"lazy")
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s.result == (OK, RAM + 10 * P, RSI_ACCEPT) and w.done
    e = vmm.realm.entry(RAM + 9 * P)
    assert (e.hipas, e.ripas) == (Hipas.ASSIGNED, Ripas.RAM)  # mapped by the fault
    assert vmm.realm.entry(RAM + 8 * P).hipas == Hipas.UNASSIGNED  # not touched yet


@pytest.mark.parametrize("base,top,ripas", [
    (RAM, RAM + P, 2),  # DESTROYED is not a request
    (RAM + 8, RAM + P, 0),
    (RAM + P, RAM + P, 0),
    (RAM, UNPROTECTED + P, 0),  # outside the PAR
])
def test_bad_input_returns_without_exit(vmm, base, top, ripas):
    s = vmm.guest().cca.ipa_state_set(base, top, ripas)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s.result[0] == int(RsiStatus.ERROR_INPUT) and s.exits == []


def test_partial_progress_at_a_destroyed_page(vmm):
    """new_base stops at the DESTROYED page unless the realm passes RSI_CHANGE_DESTROYED."""
    g = vmm.guest()
    g.write(RAM + 6 * P, b"y")
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    vmm.k.fallocate(vmm.gmem, 3, 6 * P, P)  # the host takes a page away
    s = g.cca.ipa_state_set(RAM + 4 * P, RAM + 8 * P, EMPTY)
    assert vmm.run() == -errno.EFAULT
    vmm.set_attributes(RAM + 4 * P, 4 * P, 0)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s.result == (OK, RAM + 6 * P, RSI_ACCEPT)  # partial: retry from new_base
    s2 = g.cca.ipa_state_set(RAM + 6 * P, RAM + 8 * P, EMPTY, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s2.result == (OK, RAM + 8 * P, RSI_ACCEPT)


def test_reject_when_the_vmm_refuses():
    """cca_ripas_refusal="attributes" (a kmock extension): a RAM request the VMM left
    shared is answered REJECT from the first page it refused."""
    k = cca_kernel(cca_ripas_refusal="attributes")
    vmm = RealmVmm(k).boot(size=16 * P)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    g = vmm.guest()
    g.cca.ipa_state_set(RAM + 8 * P, RAM + 12 * P, EMPTY, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    vmm.convert(RAM + 8 * P, 4 * P, private=False)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    s = g.cca.ipa_state_set(RAM + 8 * P, RAM + 12 * P, RAM_)
    assert vmm.run() == -errno.EFAULT
    vmm.convert(RAM + 8 * P, 2 * P, private=True)  # only half
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert s.result == (OK, RAM + 10 * P, RSI_REJECT)
    assert vmm.realm.entry(RAM + 9 * P).ripas == Ripas.RAM
    assert vmm.realm.entry(RAM + 10 * P).ripas == Ripas.EMPTY
    # refusing everything: REJECT at base
    s = g.cca.ipa_state_set(RAM + 10 * P, RAM + 12 * P, RAM_)
    assert vmm.run() == -errno.EFAULT
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and s.result == (OK, RAM + 10 * P, RSI_REJECT)
    # an EMPTY request is never reported as rejected
    s = g.cca.ipa_state_set(RAM, RAM + P, EMPTY, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and s.result == (OK, RAM + P, RSI_ACCEPT)
    k.close_all()


def test_v14_has_no_refusal(vmm):
    """Without the extension KVM changes RIPAS whatever the attributes say; the next
    access of the other kind exits through the attribute check."""
    g = vmm.guest()
    s = g.cca.ipa_state_set(RAM + 2 * P, RAM + 3 * P, EMPTY, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR  # the VMM did not convert
    assert s.result == (OK, RAM + 3 * P, RSI_ACCEPT)
    g.write((RAM + 2 * P) | UNPROTECTED, b"shared")
    assert vmm.run() == -errno.EFAULT  # shared access, attribute still private
    assert exit_of(vmm) == (K.KVM_EXIT_MEMORY_FAULT, RAM + 2 * P, P, 0)


def test_ipa_state_get(vmm):
    g = vmm.guest()
    g.cca.ipa_state_set(RAM + 4 * P, RAM + 6 * P, EMPTY, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    vmm.convert(RAM + 4 * P, 2 * P, private=False)
    a = g.cca.ipa_state_get(RAM, RAM + 16 * P)
    b = g.cca.ipa_state_get(RAM + 4 * P, RAM + 16 * P)
    c = g.cca.ipa_state_get(RAM + 8, RAM + P)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR
    assert a.result == (OK, RAM + 4 * P, RAM_)
    assert b.result == (OK, RAM + 6 * P, EMPTY)
    assert c.result[0] == int(RsiStatus.ERROR_INPUT)


def test_unprotected_alias_follows_the_top_bit(vmm):
    g = vmm.guest()
    g.cca.ipa_state_set(RAM + 12 * P, RAM + 13 * P, EMPTY, RSI_CHANGE_DESTROYED)
    assert vmm.run() == -errno.EFAULT
    vmm.convert(RAM + 12 * P, P, private=False)
    w = g.write((RAM + 12 * P) | UNPROTECTED, b"via alias")
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and w.done
    assert bytes(vmm.shared[12 * P:12 * P + 9]) == b"via alias"
    e = vmm.realm.entry((RAM + 12 * P) | UNPROTECTED)
    assert e.hipas == Hipas.ASSIGNED and not e.protected
    # a protected access to the same gfn: RIPAS EMPTY -> SEA (no exit)
    r = g.read(RAM + 12 * P, 4)
    assert vmm.run_to_stop() == K.KVM_EXIT_INTR and r.done and r.aborted and r.result is None
