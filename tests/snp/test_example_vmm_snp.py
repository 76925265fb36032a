"""examples/vmm_loop_snp.py: an SNP guest launched and run by the example VMM loop."""

import importlib.util
import pathlib

import kmock
import kmock_snp
from kmock.uapi import kvm as K

_path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "vmm_loop_snp.py"
_spec = importlib.util.spec_from_file_location("vmm_loop_snp", _path)
vmm_loop_snp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vmm_loop_snp)

P = 4096


def test_snp_guest_boots_converts_and_halts():
    with kmock.Kernel("linux-6.18-snp", plugins=[kmock_snp]) as k:
        r = vmm_loop_snp.boot(k)
        assert r["term"] is None and r["exits"][-1] == K.KVM_EXIT_HLT
        assert r["exits"].count(K.KVM_EXIT_HYPERCALL) == 2  # PSC to private, PSC to shared
        assert r["boot_read"] == b"SNP boot image" and r["console"] == b"!"
        assert r["psc"] == 0x15 and r["pvalidate"] == 0
        assert r["ram"].host_view((1 << 32) + 8 * P, 10) == b"hello host"
        assert not k.violations.of_kind("rmp_not_validated")
        vm = k.vm(r["vmm"].vm_fd)
        rmp = kmock_snp.machine(k).rmp
        inode = k.file(r["ram"].gmem_fd).inode
        assert rmp.entry(inode.pfn(0)).validated  # the measured image
        assert not rmp.entry(inode.pfn(8)).assigned  # shared again (punched by the VMM)
        assert vm.vmtype.pre_fault_allowed(vm)


def test_snp_guest_terminates_after_the_host_punches_a_measured_page():
    with kmock.Kernel("linux-6.18-snp", plugins=[kmock_snp]) as k:
        r = vmm_loop_snp.boot(k, punch_before_run=True)
        assert r["exits"] == [K.KVM_EXIT_SYSTEM_EVENT]
        assert vmm_loop_snp.term_reason(r["term"]) == (0, 0)
        (v,) = k.violations.of_kind("rmp_not_validated")
        assert v.gpa == 1 << 32 and "PUNCH_HOLE" in v.explanation
