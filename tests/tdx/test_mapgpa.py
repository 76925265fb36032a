"""KVM's MapGPA (arch/x86/kvm/vmx/tdx.c tdx_map_gpa / __tdx_map_gpa /
tdx_complete_vmcall_map_gpa; reference §1.2): check order, chunks, RETRY, VMM failure."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmock.uapi import kvm as K
from kmock.uapi import tdx as T
from kmock_tdx.mapgpa import HypercallExit, MapGpa

MB = 1 << 20
SHARED48 = 1 << 47
SHARED52 = 1 << 51


def exits_of(m, answer=lambda ex: 0, events=lambda i: False):
    out = []
    ex = m.start()
    while ex is not None:
        out.append(ex)
        ex = m.complete(answer(ex), events(len(out)))
    return out


# --- checks, in tdx_map_gpa()'s order ---------------------------------------------------------------


def test_exit_not_enabled_is_subfunc_unsupported_before_any_other_check():
    m = MapGpa(0x1003, 0, gpaw=48, exit_enabled=False)  # also misaligned and empty
    assert m.start() is None
    assert m.result == (T.TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED, 0x1003)


@pytest.mark.parametrize(
    "gpa,size",
    [
        (0x1000, 0),  # gpa + size <= gpa
        ((1 << 64) - 0x1000, 0x2000),  # wraps
        (1 << 48, 0x1000),  # beyond MAXPHYADDR (= GPAW 48)
        ((1 << 48) - 0x1000, 0x2000),  # the last byte is beyond
        (SHARED48 - 0x1000, 0x2000),  # private start, shared end
        (SHARED48 - 0x1001, 0x2000),  # ... and misaligned: INVALID_OPERAND comes first
    ],
)
def test_invalid_operand_with_r11_the_guest_gpa(gpa, size):
    m = MapGpa(gpa, size, gpaw=48)
    assert m.start() is None
    assert m.result == (T.TDVMCALL_STATUS_INVALID_OPERAND, gpa)


@pytest.mark.parametrize("gpa,size", [(0x1001, 0x1000), (0x1000, 0x1001), (SHARED48 | 0x10, 0x1000)])
def test_align_error(gpa, size):
    m = MapGpa(gpa, size, gpaw=48)
    assert m.start() is None
    assert m.result == (T.TDVMCALL_STATUS_ALIGN_ERROR, gpa)


def test_maxphyaddr_can_differ_from_gpaw():
    m = MapGpa(1 << 46, 0x1000, gpaw=48, maxphyaddr=46)
    m.start()
    assert m.result[0] == T.TDVMCALL_STATUS_INVALID_OPERAND


def test_bad_register_values_are_rejected_by_the_model():
    with pytest.raises(ValueError):
        MapGpa(-1, 0x1000, gpaw=48)
    with pytest.raises(ValueError):
        MapGpa(0, 0x1000, gpaw=50)


# --- chunks --------------------------------------------------------------------------------------


def test_private_range_is_cut_in_2mb_chunks_from_the_guest_gpa():
    gpa = 0x40001000  # not 2M-aligned: chunks start at gpa, gpa + 2M, ... (not at 2M boundaries)
    m = MapGpa(gpa, 5 * MB, gpaw=48)
    ex = exits_of(m)
    enc = K.KVM_MAP_GPA_RANGE_ENCRYPTED
    assert ex == [
        HypercallExit(12, (gpa, 512, enc), 0, K.KVM_EXIT_HYPERCALL_LONG_MODE),
        HypercallExit(12, (gpa + 2 * MB, 512, enc), 0, 1),
        HypercallExit(12, (gpa + 4 * MB, 256, enc), 0, 1),
    ]
    assert m.result == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)


@pytest.mark.parametrize("gpaw,shared", [(48, SHARED48), (52, SHARED52)])
def test_shared_range_strips_the_shared_bit_and_says_decrypted(gpaw, shared):
    m = MapGpa(shared | 0x200000, 0x3000, gpaw=gpaw)
    assert exits_of(m) == [HypercallExit(12, (0x200000, 3, K.KVM_MAP_GPA_RANGE_DECRYPTED), 0, 1)]
    assert m.result[0] == T.TDVMCALL_STATUS_SUCCESS


def test_gpaw52_bit47_is_an_ordinary_private_bit():
    m = MapGpa(SHARED48, 0x1000, gpaw=52)
    assert exits_of(m)[0].args == (SHARED48, 1, K.KVM_MAP_GPA_RANGE_ENCRYPTED)


@pytest.mark.parametrize("size,n", [(0x1000, 1), (2 * MB, 1), (2 * MB + 0x1000, 2), (4 * MB, 2)])
def test_number_of_exits(size, n):
    assert len(exits_of(MapGpa(0, size, gpaw=48))) == n


# --- completion -----------------------------------------------------------------------------------


def test_pending_event_between_chunks_gives_retry_with_the_next_gpa():
    gpa = SHARED48 | 0x1000
    m = MapGpa(gpa, 6 * MB, gpaw=48)
    ex = exits_of(m, events=lambda i: i == 2)  # an event arrives while the 2nd chunk is out
    assert len(ex) == 2
    assert m.result == (T.TDVMCALL_STATUS_RETRY, gpa + 4 * MB)  # R11 keeps the shared bit


def test_no_retry_after_the_last_chunk():
    m = MapGpa(0, 2 * MB, gpaw=48)
    exits_of(m, events=lambda i: True)
    assert m.result == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)


def test_guest_reissue_from_r11_completes_the_range():
    gpa, size = 0x100000, 7 * MB
    m = MapGpa(gpa, size, gpaw=48)
    exits_of(m, events=lambda i: True)
    status, r11 = m.result
    assert status == T.TDVMCALL_STATUS_RETRY and r11 == gpa + 2 * MB
    rest = MapGpa(r11, gpa + size - r11, gpaw=48)
    assert [e.args[0] for e in exits_of(rest)] == [gpa + 2 * MB, gpa + 4 * MB, gpa + 6 * MB]


def test_vmm_failure_gives_invalid_operand_with_the_failing_chunk():
    gpa = SHARED48 | 0x400000
    m = MapGpa(gpa, 6 * MB, gpaw=48)
    ex = exits_of(m, answer=lambda e: 22 if e.args[0] == 0x600000 else 0)
    assert len(ex) == 2
    assert m.result == (T.TDVMCALL_STATUS_INVALID_OPERAND, gpa + 2 * MB)


def test_failure_of_the_last_chunk_is_still_reported():
    m = MapGpa(0, 0x1000, gpaw=48)
    exits_of(m, answer=lambda e: (1 << 64) - 1)
    assert m.result == (T.TDVMCALL_STATUS_INVALID_OPERAND, 0)


def test_run_drives_a_vmm_callback():
    seen = []
    r = MapGpa(0x1000, 3 * MB, gpaw=48).run(lambda e: seen.append(e.args) or 0)
    assert r == (T.TDVMCALL_STATUS_SUCCESS, T.TDVMCALL_MAP_GPA)
    assert [a[1] for a in seen] == [512, 256]


def test_protocol_misuse():
    m = MapGpa(0, 0x1000, gpaw=48)
    with pytest.raises(RuntimeError):
        m.complete(0)
    m.start()
    with pytest.raises(RuntimeError):
        m.start()


@given(
    st.integers(0, (1 << 35) - 1),
    st.integers(1, 3000),
    st.booleans(),
)
def test_chunks_tile_the_range(page, npages, shared):
    gpa = page * 4096
    size = min(npages * 4096, (1 << 47) - gpa)
    base = SHARED48 if shared else 0
    m = MapGpa(base | gpa, size, gpaw=48)
    ex = exits_of(m)
    assert m.result[0] == T.TDVMCALL_STATUS_SUCCESS
    pos = gpa
    for e in ex:
        assert e.nr == K.KVM_HC_MAP_GPA_RANGE and e.ret == 0
        assert e.args[0] == pos and 0 < e.args[1] <= 512
        assert e.args[2] == (K.KVM_MAP_GPA_RANGE_DECRYPTED if shared else K.KVM_MAP_GPA_RANGE_ENCRYPTED)
        pos += e.args[1] * 4096
    assert pos == gpa + size and len(ex) == -(-size // (2 * MB))
