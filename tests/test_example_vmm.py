"""examples/vmm_loop.py: the example VMM loop runs scripted guests on the mock kernel."""

import importlib.util
import pathlib

import pytest

import kmock
from kmock.uapi import kvm as K

P = 4096
M2 = 2 << 20
RAM = 1 << 32

_path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "vmm_loop.py"
_spec = importlib.util.spec_from_file_location("vmm_loop", _path)
vmm_loop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vmm_loop)


@pytest.fixture
def k():
    with kmock.Kernel(profile="linux-6.18") as kernel:
        yield kernel


def setup(k, vm_type=K.KVM_X86_SW_PROTECTED_VM, private=True, size=2 * M2):
    vmm = vmm_loop.Vmm(k, vm_type)
    ram = vmm.add_ram(0, RAM, size, private=private)
    vcpu = vmm.create_vcpu(0)
    return vmm, ram, vcpu, k.vm(vmm.vm_fd).vcpus[0].guest


def test_wrong_kind_accesses_and_map_gpa_range(k):
    vmm, ram, vcpu, g = setup(k)
    assert vmm.has_private_memory() and vmm.enable_map_gpa_range_exit()
    shared = g.write(RAM, b"hello, host")  # shared by default
    w1 = g.write(RAM + P, b"private!", private=True)  # wrong kind: implicit conversion
    r1 = g.read(RAM + P, 8, private=True)
    h1 = g.map_gpa_range(RAM + M2, 512, private=True, page_size=M2)  # explicit, 2M
    w2 = g.write(RAM + M2 + 5 * P, b"deep secret")  # private=None: follows the attribute
    r2 = g.read(RAM + M2 + 5 * P, 11)
    h2 = g.map_gpa_range(RAM + M2 + 4 * P, 4, private=False)  # back to shared, 4K
    r3 = g.read(RAM + M2 + 5 * P, 11)  # the private copy was punched: shared memory is zero
    r4 = g.read(RAM + P, 8, private=False)  # wrong kind again: converts page 1 back
    out = g.outb(0xE9, 0x21)
    g.hlt()

    console = []
    exits = vmm_loop.run_until_halt(vmm, vcpu, on_io=lambda p, o, d: console.append((p, d)))

    assert exits == [K.KVM_EXIT_MEMORY_FAULT, K.KVM_EXIT_HYPERCALL, K.KVM_EXIT_HYPERCALL,
                     K.KVM_EXIT_MEMORY_FAULT, K.KVM_EXIT_IO, K.KVM_EXIT_HLT]
    assert shared.done and w1.done and w2.done and out.done
    assert r1.result == b"private!" and r2.result == b"deep secret"
    assert h1.result == 0 and h2.result == 0
    assert r3.result == bytes(11)
    assert r4.result == bytes(8)  # to private discarded the shared copy (MADV_DONTNEED)
    assert console == [(0xE9, b"!")]
    # the host only ever saw shared data
    assert ram.host_view(RAM, 11) == b"hello, host"
    assert ram.host_view(RAM + M2 + 5 * P, 11) == bytes(11)
    assert vmm.conversions == [(RAM + P, P, True), (RAM + M2, M2, True),
                               (RAM + M2 + 4 * P, 4 * P, False), (RAM + P, P, False)]
    vm = k.vm(vmm.vm_fd)
    assert vm.stage2.audit(vm) == []
    # every private mapping was zapped by the conversions back to shared; what the guest
    # touched last is mapped shared
    assert [e for e in vm.stage2.entries() if e[3]] == []
    base = RAM >> 12
    assert [vm.stage2_lookup(base + i)[1] for i in (0, 1, 517)] == [False] * 3


def test_map_gpa_range_on_memory_without_guest_memfd_gets_einval(k):
    vmm, ram, vcpu, g = setup(k, private=False)
    vmm.enable_map_gpa_range_exit()
    h = g.map_gpa_range(RAM, 1, private=True)
    g.hlt()
    vmm_loop.run_until_halt(vmm, vcpu)
    assert h.result == -K.KVM_EINVAL & ((1 << 64) - 1)


def test_mmio_and_io_handlers(k):
    vmm, ram, vcpu, g = setup(k, K.KVM_X86_DEFAULT_VM, private=False)
    r = g.read(0xFED00000, 4)  # no memslot: MMIO
    w = g.write(0xFED00004, b"\x01\x02")
    i = g.inb(0x60)
    g.hlt()
    seen = []

    def on_mmio(gpa, is_write, data):
        seen.append((gpa, is_write, data))
        return None if is_write else b"\xde\xad\xbe\xef"[:len(data)]

    vmm_loop.run_until_halt(vmm, vcpu, on_io=lambda p, o, d: b"\x2a", on_mmio=on_mmio)
    assert r.result == b"\xde\xad\xbe\xef" and w.done and i.result == 0x2A
    assert seen[1] == (0xFED00004, True, b"\x01\x02")


def test_unfixable_fault_raises(k):
    vmm, ram, vcpu, g = setup(k, private=False)
    g.read(RAM, 1, private=True)  # private access to a slot without guest_memfd
    with pytest.raises(RuntimeError, match="cannot convert"):
        vmm_loop.run_until_halt(vmm, vcpu)


def test_demo_runs(capsys):
    vmm_loop.demo()
    out = capsys.readouterr().out
    assert "guest read back: b'secret'" in out and "console: b'!'" in out
