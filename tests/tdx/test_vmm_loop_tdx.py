"""examples/vmm_loop_tdx.py: the TDX VMM launches a TD through ioctls and runs scripted TD
guests, handling MapGPA exits as QEMU does."""

import importlib.util
import pathlib

import pytest

from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

P = 4096
M2 = 2 << 20
RAM = 1 << 32

_path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "vmm_loop_tdx.py"
_spec = importlib.util.spec_from_file_location("vmm_loop_tdx", _path)
vmm_loop_tdx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vmm_loop_tdx)
SHARED = vmm_loop_tdx.SHARED_BIT


@pytest.fixture
def vmm(tdx_kernel):
    k = tdx_kernel()
    v = vmm_loop_tdx.TdxVmm(k, RAM, 3 * M2)
    v.load_firmware(b"FW" * 3000, RAM)  # 6000 bytes: 2 pages
    v.finalize()
    v.guest = k.vm(v.vm).vcpus[0].guest
    return v


def test_td_boot_with_map_gpa_in_chunks(vmm):
    g = vmm.guest
    fw = g.read(RAM, 4)
    acc = g.tdx.accept(RAM + 2 * P)
    g.write(RAM + 2 * P, b"private")
    # share 2 MB + 2 pages from an unaligned gpa: two MapGPA chunks
    share = g.tdx.map_gpa((RAM + 4 * P) | SHARED, M2 + 2 * P)
    g.write((RAM + 4 * P) | SHARED, b"to the host")
    q = g.tdx.get_quote((RAM + 8 * P) | SHARED, P)
    # take back one page and accept it again
    back = g.tdx.map_gpa(RAM + 4 * P, P)
    acc2 = g.tdx.accept(RAM + 4 * P)
    r = g.read(RAM + 4 * P, 11)
    g.outb(0xE9, ord("!"))
    g.hlt()  # halts in KVM_RUN: no KVM_EXIT_HLT for a TD
    g.stop()
    console = []
    exits = vmm.run(on_io=lambda port, is_out, data: console.append(data))
    assert exits == [K.KVM_EXIT_HYPERCALL] * 2 + [K.KVM_EXIT_TDX, K.KVM_EXIT_HYPERCALL,
                                                   K.KVM_EXIT_IO, K.KVM_EXIT_INTR]
    assert fw.result == b"FWFW" and acc.result == acc2.result == T.TDX_SUCCESS
    assert share.result == back.result == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)
    assert vmm.conversions == [(RAM + 4 * P, M2, False), (RAM + 4 * P + M2, 2 * P, False),
                               (RAM + 4 * P, P, True)]
    assert vmm.host_view(RAM + 4 * P, 11) == bytes(11)  # taken back: the shared copy discarded
    assert vmm.host_view(RAM + 8 * P, 6) == b"QUOTE:" and q.result == 0
    assert r.result == bytes(11)  # accepted again: the module zeroed it
    assert console == [b"!"]
    assert not vmm.k.violations


def test_vmm_refusing_a_chunk_gives_invalid_operand(vmm):
    g = vmm.guest
    a = g.tdx.map_gpa((RAM + 3 * M2 - P) | SHARED, 2 * P)  # runs past the end of RAM
    g.stop()
    assert vmm.run() == [K.KVM_EXIT_HYPERCALL, K.KVM_EXIT_INTR]
    assert a.result == (T.TDVMCALL_STATUS_INVALID_OPERAND, (RAM + 3 * M2 - P) | SHARED)


def test_vmm_that_punches_an_accepted_page_kills_the_td(vmm):
    g = vmm.guest
    g.tdx.accept(RAM + 9 * P)
    g.stop()
    assert vmm.run() == [K.KVM_EXIT_INTR]
    vmm.k.fallocate(vmm.gmem, 3, 9 * P, P)  # a VMM bug: discard without a conversion
    g.read(RAM + 9 * P, 1)
    g.stop()
    with pytest.raises(vmm_loop_tdx.TdDied):
        vmm.run()
    v = vmm.k.violations[-1]
    assert v.kind == "td_killed" and v.gpa == RAM + 9 * P


def test_fatal_error_stops_the_loop(vmm):
    vmm.guest.tdx.report_fatal_error(error_code=0xDEAD)
    with pytest.raises(vmm_loop_tdx.TdFatal) as e:
        vmm.run()
    assert e.value.data[12] == 0xDEAD


def test_demo_runs(capsys):
    vmm_loop_tdx.demo()
    out = capsys.readouterr().out
    assert "firmware: b'TDVF'" in out and "host sees: b'hello host'" in out
