"""x86 vCPU register and state ioctls (kmock.kvm.x86_vcpu) on profile linux-6.18: what the
conformance scenarios (fact_x86_*) cannot show, and a property test of set/get round trips."""

import ctypes
import errno
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmock
from kmock.kvm import x86_msr, x86_state, x86_vcpu
from kmock.testing.conformance import in_child
from kmock.testing.conformance_vcpu import cpuid_buf, msrs_buf, msrs_values
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

from ._util import create_vm

U64 = (1 << 64) - 1
ENTRY = ctypes.sizeof(K.kvm_cpuid_entry2)


def new_vcpu(k, vid=0):
    kvm, vm = create_vm(k)
    return kvm, vm, k.ioctl(vm, K.KVM_CREATE_VCPU, vid)


def err(fn, *args):
    with pytest.raises(OSError) as e:
        fn(*args)
    return e.value.errno


def run_hlt(k, vcpu):
    """KVM_RUN of the empty script: the vCPU enters the guest and exits with HLT."""
    assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0


def test_values_a_vmm_sets_survive_kvm_run(k):
    _, _, v = new_vcpu(k)
    regs = K.kvm_regs(rip=0x100000, rsp=0x8000, rflags=0x202, rdi=0x1234)
    k.ioctl(v, X.KVM_SET_REGS, regs)
    sregs = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, sregs)
    sregs.cr0, sregs.cr4, sregs.cr3 = 0x80000011, X.X86_CR4_PAE, 0x9000
    sregs.efer = X.EFER_LME | X.EFER_LMA
    sregs.cs.l, sregs.cs.db = 1, 0
    k.ioctl(v, X.KVM_SET_SREGS, sregs)
    assert k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(0xC0000082, 0xFFFFFFFF81000000)])) == 1
    run_hlt(k, v)
    got = K.kvm_regs()
    k.ioctl(v, X.KVM_GET_REGS, got)
    assert bytes(got) == bytes(regs)
    after = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, after)
    assert bytes(after) == bytes(sregs)
    buf = msrs_buf([(0xC0000082, 0)])
    assert k.ioctl(v, X.KVM_GET_MSRS, buf) == 1
    assert msrs_values(buf, 1) == [0xFFFFFFFF81000000]


def test_cpuid_after_kvm_run_must_be_the_same(k):
    kvm, _, v = new_vcpu(k)
    sup = bytearray(8 + 256 * ENTRY)
    sup[0:4] = (256).to_bytes(4, "little")
    k.ioctl(kvm, K.KVM_GET_SUPPORTED_CPUID, sup)
    k.ioctl(v, X.KVM_SET_CPUID2, sup)
    changed = bytearray(sup)
    changed[8 + 12] ^= 1
    k.ioctl(v, X.KVM_SET_CPUID2, changed)  # not run yet: any table
    k.ioctl(v, X.KVM_SET_CPUID2, sup)
    run_hlt(k, v)
    assert k.ioctl(v, X.KVM_SET_CPUID2, sup) == 0
    assert err(k.ioctl, v, X.KVM_SET_CPUID2, changed) == errno.EINVAL
    assert err(k.ioctl, v, X.KVM_SET_CPUID2, cpuid_buf(300)) == errno.E2BIG


def test_immediate_exit_is_not_a_run(k):
    """kvm_vcpu_has_run is set on guest entry: an EINTR return does not count."""
    _, _, v = new_vcpu(k)
    m = k.mmap(v, 4096, 3, 1, 0)
    m[1] = 1
    assert err(k.ioctl, v, K.KVM_RUN, 0) == errno.EINTR
    k.ioctl(v, X.KVM_SET_CPUID2, cpuid_buf(0))
    k.ioctl(v, X.KVM_SET_CPUID2, cpuid_buf(1, bytes(K.kvm_cpuid_entry2(function=1))))
    m.close()


def test_forked_child_gets_eio(k):
    kvm, _, v = new_vcpu(k)
    for req, arg in ((X.KVM_GET_REGS, K.kvm_regs()), (X.KVM_SET_SREGS, X.kvm_sregs()),
                     (X.KVM_GET_MSRS, msrs_buf([(0x174, 0)])), (X.KVM_GET_TSC_KHZ, 0)):
        assert in_child(k, lambda s, req=req, arg=arg: s.ioctl(v, req, arg)) == ("errno", "EIO")
    # /dev/kvm's MSR lists have no owner
    buf = bytearray(4 + 4 * 100)
    buf[0:4] = (100).to_bytes(4, "little")
    assert in_child(k, lambda s: s.ioctl(kvm, X.KVM_GET_MSR_INDEX_LIST, buf)) == ("ok", 0)


@pytest.mark.parametrize("req", [X.KVM_GET_REGS, X.KVM_SET_REGS, X.KVM_GET_SREGS, X.KVM_SET_SREGS,
                                 X.KVM_GET_FPU, X.KVM_SET_FPU, X.KVM_GET_MSRS, X.KVM_SET_MSRS,
                                 X.KVM_GET_CPUID2, X.KVM_SET_CPUID2, X.KVM_GET_VCPU_EVENTS,
                                 X.KVM_SET_VCPU_EVENTS, X.KVM_GET_XSAVE, X.KVM_SET_XSAVE,
                                 X.KVM_GET_XSAVE2, X.KVM_SET_SIGNAL_MASK])
def test_bad_pointers_are_efault(k, req):
    _, _, v = new_vcpu(k)
    assert err(k.ioctl, v, req, 8) == errno.EFAULT


def test_entries_past_a_readable_header_are_efault(k):
    """msr_io reads the header, then the entries (memdup_user): an array running into an
    unmapped page is EFAULT and nothing is written."""
    import mmap
    _, _, v = new_vcpu(k)
    m = mmap.mmap(-1, 2 * 4096)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    hdr = base + 4096 - 8
    m[4096 - 8:4096 - 4] = (2).to_bytes(4, "little")
    ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + 4096), 4096, 0)
    try:
        assert err(k.ioctl, v, X.KVM_SET_MSRS, hdr) == errno.EFAULT
    finally:
        ctypes.CDLL(None).mprotect(ctypes.c_void_p(base + 4096), 4096, 3)
    buf = msrs_buf([(0x174, 0)])
    k.ioctl(v, X.KVM_GET_MSRS, buf)
    assert msrs_values(buf, 1) == [0]


def test_a_refused_call_changes_nothing(k):
    _, _, v = new_vcpu(k)
    before = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, before)
    bad = X.kvm_sregs.from_buffer_copy(before)
    bad.cr0, bad.cr2 = 0x80000010, 0x5000  # PG without PE
    assert err(k.ioctl, v, X.KVM_SET_SREGS, bad) == errno.EINVAL
    after = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, after)
    assert bytes(after) == bytes(before)
    ev = X.kvm_vcpu_events(flags=X.KVM_VCPUEVENT_VALID_SHADOW)
    ev.interrupt.injected, ev.interrupt.nr, ev.exception.injected, ev.exception.nr = 1, 0x30, 1, 40
    assert err(k.ioctl, v, X.KVM_SET_VCPU_EVENTS, ev) == errno.EINVAL
    got = X.kvm_vcpu_events()
    k.ioctl(v, X.KVM_GET_VCPU_EVENTS, got)
    assert got.interrupt.injected == 0
    # __msr_io stops at the first refusal; the MSRs before it are written
    buf = msrs_buf([(0x174, 7), (0xC0000082, 1 << 63), (0xC0000081, 9)])
    assert k.ioctl(v, X.KVM_SET_MSRS, buf) == 1
    buf = msrs_buf([(0x174, 0), (0xC0000082, 0), (0xC0000081, 0)])
    assert k.ioctl(v, X.KVM_GET_MSRS, buf) == 3
    assert msrs_values(buf, 3) == [7, 0, 0]


def test_linux_618_defaults(k):
    kvm, vm, v = new_vcpu(k)
    buf = bytearray(4 + 4 * 64)
    buf[0:4] = (64).to_bytes(4, "little")
    k.ioctl(kvm, X.KVM_GET_MSR_INDEX_LIST, buf)
    n = int.from_bytes(buf[0:4], "little")
    assert n == len(x86_state.DEFAULTS_618["msr_index_list"]) == 43
    assert k.ioctl(v, X.KVM_GET_TSC_KHZ, 0) == 2100000
    xcrs = X.kvm_xcrs()
    k.ioctl(v, X.KVM_GET_XCRS, xcrs)
    assert (xcrs.nr_xcrs, xcrs.xcrs[0].xcr, xcrs.xcrs[0].value) == (1, 0, 1)
    # a TSC write moves the guest TSC (kvm_synchronize_tsc)
    assert k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(0x10, 1 << 40)])) == 1
    buf = msrs_buf([(0x10, 0)])
    k.ioctl(v, X.KVM_GET_MSRS, buf)
    assert (1 << 40) <= msrs_values(buf, 1)[0] < (1 << 40) + (1 << 36)
    v1 = k.ioctl(vm, K.KVM_CREATE_VCPU, 1)
    s0, s1 = X.kvm_sregs(), X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, s0)
    k.ioctl(v1, X.KVM_GET_SREGS, s1)
    assert (s0.apic_base, s1.apic_base) == (0xFEE00900, 0xFEE00800)  # BSP bit for vCPU 0


def test_state_follows_the_guest_cpuid(k):
    """CR4.OSXSAVE and XCR0 bits are reserved until KVM_SET_CPUID2 gives the guest XSAVE."""
    kvm, _, v = new_vcpu(k)
    x = X.kvm_xcrs(nr_xcrs=1)
    x.xcrs[0].value = 3
    assert err(k.ioctl, v, X.KVM_SET_XCRS, x) == errno.EINVAL
    sup = bytearray(8 + 256 * ENTRY)
    sup[0:4] = (256).to_bytes(4, "little")
    k.ioctl(kvm, K.KVM_GET_SUPPORTED_CPUID, sup)
    k.ioctl(v, X.KVM_SET_CPUID2, sup)
    assert k.ioctl(v, X.KVM_SET_XCRS, x) == 0
    s = X.kvm_sregs()
    k.ioctl(v, X.KVM_GET_SREGS, s)
    s.cr4 = 1 << 18
    assert k.ioctl(v, X.KVM_SET_SREGS, s) == 0
    k.ioctl(v, X.KVM_SET_CPUID2, cpuid_buf(0))  # no features: OSXSAVE is reserved again
    assert err(k.ioctl, v, X.KVM_SET_SREGS, s) == errno.EINVAL


def test_arm64_profiles_have_no_x86_state_ioctls():
    with kmock.Kernel(profile="linux-arm64") as k:
        assert X.KVM_GET_SREGS not in k.ioctl_table("vcpu")
        assert X.KVM_GET_MSR_INDEX_LIST not in k.ioctl_table("kvm")


def test_tables_are_registered_for_x86(k):
    table = k.ioctl_table("vcpu")
    for req in x86_vcpu.vcpu_ioctls():
        assert req in table


# --- property: set/get round trips against a model -----------------------------------------

u64 = st.integers(0, U64)
STORE_MSRS = [i for i, (kind, rsv) in x86_msr.MSR_RULES.items()
              if kind == x86_msr.STORE and not rsv]
op = st.one_of(
    st.tuples(st.just("regs"), st.lists(u64, min_size=18, max_size=18)),
    st.tuples(st.just("debugregs"), st.tuples(st.lists(u64, min_size=4, max_size=4),
                                              st.integers(0, 2**32 - 1), st.integers(0, 2**33))),
    st.tuples(st.just("msr"), st.tuples(st.sampled_from(STORE_MSRS + [0xC0000082]), u64)),
    st.tuples(st.just("fpu"), st.tuples(st.integers(0, 0xFFFF), st.binary(min_size=16, max_size=16))),
    st.tuples(st.just("mp_state"), st.integers(0, 12)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(op, max_size=25))
def test_round_trips_match_a_model(k, ops):
    kvm, vm, v = new_vcpu(k)
    model = {"regs": None, "db": ([0] * 4, 0xFFFF0FF0, 0x400), "msrs": {}, "fpu": (0x37F, bytes(16)),
             "mp": 0}
    for name, arg in ops:
        if name == "regs":
            r = K.kvm_regs(*arg)
            k.ioctl(v, X.KVM_SET_REGS, r)
            model["regs"] = arg[:17] + [arg[17] | 2]
        elif name == "debugregs":
            db, dr6, dr7 = arg
            d = X.kvm_debugregs(dr6=dr6, dr7=dr7)
            for i in range(4):
                d.db[i] = db[i]
            if dr7 >> 32:
                assert err(k.ioctl, v, X.KVM_SET_DEBUGREGS, d) == errno.EINVAL
            else:
                k.ioctl(v, X.KVM_SET_DEBUGREGS, d)
                model["db"] = (db, dr6, dr7)
        elif name == "msr":
            idx, val = arg
            done = k.ioctl(v, X.KVM_SET_MSRS, msrs_buf([(idx, val)]))
            top = val >> 47
            ok = idx != 0xC0000082 or top in (0, (1 << 17) - 1) or \
                x86_state.virt_addr_bits(k.profile.cpuid) == 57 and val >> 56 in (0, 0xFF)
            assert done == int(ok)
            if ok:
                model["msrs"][idx] = val
        elif name == "fpu":
            fcw, xmm0 = arg
            f = X.kvm_fpu(fcw=fcw)
            ctypes.memmove(ctypes.addressof(f.xmm), xmm0, 16)
            k.ioctl(v, X.KVM_SET_FPU, f)
            model["fpu"] = (fcw, xmm0)
        else:
            m = X.kvm_mp_state(arg)
            if arg == 0:
                k.ioctl(v, X.KVM_SET_MP_STATE, m)
            else:
                assert err(k.ioctl, v, X.KVM_SET_MP_STATE, m) == errno.EINVAL
    if model["regs"] is not None:
        r = K.kvm_regs()
        k.ioctl(v, X.KVM_GET_REGS, r)
        assert [getattr(r, n) for n, _ in K.kvm_regs._fields_] == model["regs"]
    d = X.kvm_debugregs()
    k.ioctl(v, X.KVM_GET_DEBUGREGS, d)
    assert (list(d.db), d.dr6, d.dr7) == (list(model["db"][0]), model["db"][1], model["db"][2])
    if model["msrs"]:
        idxs = list(model["msrs"])
        buf = msrs_buf([(i, 0) for i in idxs])
        assert k.ioctl(v, X.KVM_GET_MSRS, buf) == len(idxs)
        assert msrs_values(buf, len(idxs)) == [model["msrs"][i] for i in idxs]
    f = X.kvm_fpu()
    k.ioctl(v, X.KVM_GET_FPU, f)
    assert (f.fcw, bytes(f.xmm[0])) == model["fpu"] and f.mxcsr == 0
    m = X.kvm_mp_state()
    k.ioctl(v, X.KVM_GET_MP_STATE, m)
    assert m.mp_state == model["mp"]
    for fd in (v, vm, kvm):
        k.close(fd)


def test_a_state_ioctl_waits_for_a_kvm_run_in_another_thread():
    """kvm_vcpu_ioctl takes vcpu->mutex: KVM_SET_REGS from one thread waits while another
    holds the vCPU (in KVM_RUN), then goes through."""
    import threading

    with kmock.Kernel("linux-6.18") as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        fd = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        vcpu = k.vm(vm).vcpus[0]
        done = threading.Event()
        regs = K.kvm_regs(rax=7)

        def set_regs():
            k.ioctl(fd, K.KVM_SET_REGS, regs)
            done.set()

        with vcpu.mutex:  # as KVM_RUN holds it
            t = threading.Thread(target=set_regs)
            t.start()
            assert not done.wait(0.2)  # waiting for the vCPU
        t.join(5)
        assert done.is_set()
        out = K.kvm_regs()
        k.ioctl(fd, K.KVM_GET_REGS, out)
        assert out.rax == 7
