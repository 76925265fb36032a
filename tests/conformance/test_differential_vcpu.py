"""Differential testing of the x86 vCPU state ioctls: random values, real kernel vs mock.

Each example makes a fresh VM and vCPU on ``kmock.HostKernel()`` and on
``kmock.Kernel(profile="host")`` (with or without the supported CPUID), applies the same
drawn KVM_SET_SREGS / SET_REGS / SET_VCPU_EVENTS / SET_DEBUGREGS / SET_XCRS / SET_MSRS, and
compares the call's outcome and what the matching GET reads back afterwards. Valid values,
reserved bits and host-specific behaviour (the PVM probe host's RFLAGS, interrupt shadow,
CONFIG_KVM_SMM and CR4 quirks: probed settings of the host profile) are all drawn.

The TSC (MSR 0x10) is read back as "moved or not", since it counts.
"""

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmock
from kmock.testing.conformance import kvm_available
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X

SKIP_REASON = "no /dev/kvm on this machine: conformance against the real kernel skipped"
pytestmark = [pytest.mark.conformance, pytest.mark.skipif(not kvm_available(), reason=SKIP_REASON)]

#: 40 examples a run; 1000 with KMOCK_HYPOTHESIS_PROFILE=thorough (conftest.py), as test_differential.py
EXAMPLES = max(40, settings().max_examples) if os.environ.get("KMOCK_HYPOTHESIS_PROFILE") == "thorough" else 40
U64 = (1 << 64) - 1
CR0_BITS = (0, 1, 2, 3, 4, 5, 6, 16, 17, 18, 29, 30, 31)
CR4_BITS = tuple(range(26)) + (28,)
EFER_BITS = (0, 1, 8, 10, 11, 12, 13, 14, 15)


def bits(choices, extra_hi=None):
    s = st.sets(st.sampled_from(choices)).map(lambda b: sum(1 << i for i in b))
    if extra_hi is not None:
        s = st.tuples(s, st.one_of(st.just(0), st.integers(extra_hi, 63).map(lambda i: 1 << i))
                      ).map(lambda t: t[0] | t[1])
    return s


u64 = st.one_of(st.sampled_from([0, 1, 2, 0xFEE00900, 1 << 63, U64]), st.integers(0, U64))
u32 = st.integers(0, (1 << 32) - 1)

sregs_values = st.fixed_dictionaries({
    "cr0": bits(CR0_BITS, 32), "cr4": bits(CR4_BITS, 26), "efer": bits(EFER_BITS),
    "cr3": st.sampled_from([0, 0x1000, 0x1001, 1 << 40, 1 << 52, 1 << 63, U64]),
    "cr8": st.sampled_from([0, 5, 15, 16, 1 << 40]), "l": st.booleans(), "db": st.booleans(),
    "apic_base": st.sampled_from([0xFEE00900, 0xFEE00100, 0xFEE00D00, 0xFEE00500, 0,
                                  0xFEE00800, 1 << 40 | 0x900]),
})
regs_values = st.fixed_dictionaries({"rflags": u64, "rip": u64, "rax": u64})
events_values = st.fixed_dictionaries({
    "flags": bits(range(8)),
    "exc": st.tuples(st.booleans(), st.sampled_from([0, 2, 6, 13, 14, 31, 32, 255]),
                     st.booleans(), st.booleans(), u32),
    "intr": st.tuples(st.booleans(), st.integers(0, 255), st.booleans(),
                      st.sampled_from([0, 1, 2, 3, 255])),
    "nmi": st.tuples(st.booleans(), st.sampled_from([0, 1, 2, 3, 255]), st.sampled_from([0, 1, 2])),
    "smi": st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    "sipi": st.integers(0, 255), "tf": st.booleans(), "payload": st.tuples(st.booleans(), u64),
})
debugregs_values = st.fixed_dictionaries({
    "dr6": st.one_of(st.sampled_from([0, 0xFFFF0FF0]), u64), "dr7": st.one_of(st.just(0x400), u64),
    "flags": st.sampled_from([0, 0, 1]), "db": st.lists(u64, min_size=4, max_size=4),
})
xcrs_values = st.fixed_dictionaries({
    "nr": st.sampled_from([0, 1, 1, 2, 17]), "flags": st.sampled_from([0, 0, 1]),
    "xcr": st.sampled_from([0, 0, 1]), "value": st.one_of(st.sampled_from([1, 3, 7, 0, 2, 0xE7, 5]), u64),
})
msr_values = st.lists(st.tuples(st.integers(0, 10**6), u64), min_size=1, max_size=3)

KINDS = {"sregs": sregs_values, "regs": regs_values, "events": events_values,
         "debugregs": debugregs_values, "xcrs": xcrs_values, "msrs": msr_values}


def _vcpu(k, cpuid):
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    if cpuid:
        buf = bytearray(8 + 256 * 40)
        buf[0:4] = (256).to_bytes(4, "little")
        k.ioctl(kvm, K.KVM_GET_SUPPORTED_CPUID, buf)
        k.ioctl(cpu, X.KVM_SET_CPUID2, buf)
    return kvm, cpu


def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except OSError as e:
        return ("errno", e.errno)


def _msr_buf(entries):
    buf = bytearray(8 + 16 * len(entries))
    buf[0:4] = len(entries).to_bytes(4, "little")
    for i, (index, data) in enumerate(entries):
        buf[8 + 16 * i:12 + 16 * i] = index.to_bytes(4, "little")
        buf[16 + 16 * i:24 + 16 * i] = data.to_bytes(8, "little")
    return buf


def apply(k, kind, v, cpuid):
    """Run the drawn SET and the matching GET on ``k``; returns what can be compared."""
    kvm, cpu = _vcpu(k, cpuid)
    if kind == "sregs":
        s = X.kvm_sregs()
        k.ioctl(cpu, X.KVM_GET_SREGS, s)
        s.cr0, s.cr4, s.efer, s.cr3, s.cr8 = v["cr0"], v["cr4"], v["efer"], v["cr3"], v["cr8"]
        s.cs.l, s.cs.db, s.apic_base = v["l"], v["db"], v["apic_base"]
        out = _outcome(k.ioctl, cpu, X.KVM_SET_SREGS, s)
        g = X.kvm_sregs()
        k.ioctl(cpu, X.KVM_GET_SREGS, g)
        return out, (g.cr0, g.cr4, g.efer, g.cr3, g.cr8, g.apic_base, g.cs.l)
    if kind == "regs":
        r = K.kvm_regs()
        k.ioctl(cpu, K.KVM_GET_REGS, r)
        r.rflags, r.rip, r.rax = v["rflags"], v["rip"], v["rax"]
        out = _outcome(k.ioctl, cpu, K.KVM_SET_REGS, r)
        k.ioctl(cpu, K.KVM_GET_REGS, r)
        return out, (r.rflags, r.rip, r.rax)
    if kind == "events":
        e = X.kvm_vcpu_events()
        k.ioctl(cpu, X.KVM_GET_VCPU_EVENTS, e)
        e.flags = v["flags"]
        x = e.exception
        x.injected, x.nr, x.has_error_code, x.pending, x.error_code = v["exc"]
        i = e.interrupt
        i.injected, i.nr, i.soft, i.shadow = v["intr"]
        e.nmi.injected, e.nmi.pending, e.nmi.masked = v["nmi"]
        m = e.smi
        m.smm, m.pending, m.smm_inside_nmi, m.latched_init = v["smi"]
        e.sipi_vector, e.triple_fault.pending = v["sipi"], v["tf"]
        e.exception_has_payload, e.exception_payload = v["payload"]
        out = _outcome(k.ioctl, cpu, X.KVM_SET_VCPU_EVENTS, e)
        g = X.kvm_vcpu_events()
        k.ioctl(cpu, X.KVM_GET_VCPU_EVENTS, g)
        return out, bytes(g).hex()
    if kind == "debugregs":
        d = X.kvm_debugregs(dr6=v["dr6"], dr7=v["dr7"], flags=v["flags"])
        for n, value in enumerate(v["db"]):
            d.db[n] = value
        out = _outcome(k.ioctl, cpu, X.KVM_SET_DEBUGREGS, d)
        g = X.kvm_debugregs()
        k.ioctl(cpu, X.KVM_GET_DEBUGREGS, g)
        return out, bytes(g).hex()
    if kind == "xcrs":
        x = X.kvm_xcrs(nr_xcrs=v["nr"], flags=v["flags"])
        x.xcrs[0].xcr, x.xcrs[0].value = v["xcr"], v["value"]
        out = _outcome(k.ioctl, cpu, X.KVM_SET_XCRS, x)
        g = X.kvm_xcrs()
        k.ioctl(cpu, X.KVM_GET_XCRS, g)
        return out, (g.nr_xcrs, g.flags, g.xcrs[0].xcr, g.xcrs[0].value)
    # msrs: indexes drawn from this host's KVM_GET_MSR_INDEX_LIST
    lst = bytearray(4 + 4 * 512)
    lst[0:4] = (512).to_bytes(4, "little")
    k.ioctl(kvm, X.KVM_GET_MSR_INDEX_LIST, lst)
    n = int.from_bytes(lst[0:4], "little")
    index = [int.from_bytes(lst[4 + 4 * i:8 + 4 * i], "little") for i in range(n)]
    entries = [(index[pick % n], data) for pick, data in v]
    before = _msr_buf([(i, 0) for i, _ in entries])
    k.ioctl(cpu, X.KVM_GET_MSRS, before)
    out = _outcome(k.ioctl, cpu, X.KVM_SET_MSRS, _msr_buf(entries))
    after = _msr_buf([(i, 0) for i, _ in entries])
    got = _outcome(k.ioctl, cpu, X.KVM_GET_MSRS, after)
    values = []
    for j, (i, _) in enumerate(entries):
        value = int.from_bytes(after[16 + 16 * j:24 + 16 * j], "little")
        if i == 0x10:  # the TSC counts: compare whether it stayed near its old value
            old = int.from_bytes(before[16 + 16 * j:24 + 16 * j], "little")
            value = ("tsc moved by the write", abs(value - old) > 1 << 40)
        values.append(value)
    return out, got, [hex(i) for i, _ in entries], values


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(kind=st.sampled_from(sorted(KINDS)), data=st.data(), cpuid=st.booleans())
def test_vcpu_state_agrees_with_the_real_kernel(kind, data, cpuid):
    v = data.draw(KINDS[kind], label=kind)
    with kmock.HostKernel() as h:
        real = apply(h, kind, v, cpuid)
    with kmock.Kernel(profile="host") as m:
        mock = apply(m, kind, v, cpuid)
    assert mock == real, f"{kind} {v} (supported CPUID set: {cpuid})"
