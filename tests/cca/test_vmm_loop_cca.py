"""examples/vmm_loop_cca.py: the realm VMM loop boots a scripted realm on the mock."""

import importlib.util
import pathlib

import pytest

from kmock.uapi import kvm as K
from kmock_cca.rtt import RSI_CHANGE_DESTROYED, Ripas

from .conftest import cca_kernel

_path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "vmm_loop_cca.py"
_spec = importlib.util.spec_from_file_location("vmm_loop_cca", _path)
vmm_loop_cca = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vmm_loop_cca)

RAM = 0x40000000
P = 4096


@pytest.fixture
def booted():
    k = cca_kernel()
    vmm = vmm_loop_cca.RealmVmm(k)
    vmm.add_ram(RAM, 64 * P)
    vmm.create_vcpu(0)
    vmm.finish_irqchip()
    assert vmm.load_image(RAM, b"realm kernel" * 1000) == 1
    yield k, vmm
    k.close_all()


def test_boot_share_and_mmio(booted):
    k, vmm = booted
    g = k.vm(vmm.vm).vcpus[0].guest
    boot = g.read(RAM, 12)
    share = RAM + 32 * P
    s = g.cca.ipa_state_set(share, share + 2 * P, Ripas.EMPTY, RSI_CHANGE_DESTROYED)
    g.write(share | vmm.unprotected, b"to the host")
    rd = g.read(0x09000000 | vmm.unprotected, 4)
    h = g.hlt()  # WFI: the vCPU waits inside KVM_RUN...
    g.stop()  # ...until the VMM's thread is signalled
    seen = []
    exits = vmm.run(on_mmio=lambda gpa, w, data: seen.append((gpa, w)) or b"\x01\x02\x03\x04")
    assert exits == [K.KVM_EXIT_MEMORY_FAULT, K.KVM_EXIT_MMIO, K.KVM_EXIT_INTR] and h.done
    assert boot.result == b"realm kernel"
    assert s.result == (0, share + 2 * P, 0)
    assert bytes(vmm.shared[32 * P:32 * P + 11]) == b"to the host"
    assert seen == [(0x09000000, False)] and rd.result == b"\x01\x02\x03\x04"
    assert k.violations.of_kind("realm_data_destroyed") == []


def test_back_to_private_and_lazy_backing(booted):
    k, vmm = booted
    g = k.vm(vmm.vm).vcpus[0].guest
    page = RAM + 40 * P
    g.cca.ipa_state_set(page, page + P, Ripas.EMPTY, RSI_CHANGE_DESTROYED)
    s = g.cca.ipa_state_set(page, page + P, Ripas.RAM)
    g.write(page, b"private again")
    r = g.read(page, 13)
    g.stop()
    exits = vmm.run()
    assert exits == [K.KVM_EXIT_MEMORY_FAULT, K.KVM_EXIT_MEMORY_FAULT, K.KVM_EXIT_INTR]
    assert s.result == (0, page + P, 0) and r.result == b"private again"


def test_a_host_punch_stops_the_realm(booted):
    k, vmm = booted
    g = k.vm(vmm.vm).vcpus[0].guest
    g.stop()
    assert vmm.run() == [K.KVM_EXIT_INTR]  # activated
    k.fallocate(vmm.gmem, 3, 0, P)  # a buggy VMM discards a page of the image
    r = g.read(RAM, 4)
    s = g.stop()
    # no progress: KVM_RUN spins on the abort until a signal (kmock: at once, recorded);
    # the VMM sees the EINTR of a signal, the realm never got to its stop
    assert vmm.run() == [K.KVM_EXIT_INTR] and not r.done and not s.done
    assert k.violations.of_kind("realm_data_destroyed")
    (v,) = k.violations.of_kind("realm_access_destroyed")
    assert v.gpa == RAM


def test_a_punch_before_activation_fails_the_first_run(booted):
    k, vmm = booted
    k.fallocate(vmm.gmem, 3, 0, P)
    with pytest.raises(OSError) as ei:
        vmm.run()
    assert ei.value.errno == 6  # ENXIO: INIT_RIPAS stops at the DESTROYED page (kmock choice)


def test_demo_runs(capsys):
    vmm_loop_cca.demo()
    assert "hello host" in capsys.readouterr().out
