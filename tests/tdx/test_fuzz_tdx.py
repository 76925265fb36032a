"""Hypothesis fuzz of a TD's ioctls and guest actions: any sub-command, flags, hw_error and
argument bytes, on the VM or vCPU fd, at any launch stage, and any guest TDCALL arguments
give the kernel's errno or succeed: never another exception type (DESIGN.md "Errors and
consequences")."""

import ctypes
import mmap

import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from ._td import GPA, P, Td

U64 = (1 << 64) - 1
SCRATCH = mmap.mmap(-1, 4 * P)
SCRATCH_ADDR = ctypes.addressof(ctypes.c_char.from_buffer(SCRATCH))
NOACCESS_ADDR = 1 << 16  # below anything this process maps: copy_from_user fails

pointers = st.sampled_from([0, NOACCESS_ADDR, SCRATCH_ADDR, SCRATCH_ADDR + P - 8, (1 << 63),
                            U64 - 7])
requests = st.sampled_from([K.KVM_MEMORY_ENCRYPT_OP, T.KVM_NMI, T.KVM_SET_CPUID2,
                            K.KVM_ENABLE_CAP, K.KVM_PRE_FAULT_MEMORY, K.KVM_RUN,
                            K.KVM_CREATE_VCPU])
gpas = st.one_of(st.integers(0, U64), st.sampled_from(
    [GPA, GPA + P, GPA + 63 * P, (GPA | (1 << 47)), 1 << 47, (1 << 48) - P, GPA + 8]))


@st.composite
def calls(draw):
    on_vcpu = draw(st.booleans())
    req = draw(requests)
    kind = draw(st.sampled_from(["cmd", "bytes", "int"]))
    if kind == "cmd":
        arg = bytes(T.kvm_tdx_cmd(id=draw(st.integers(0, 8)), flags=draw(st.sampled_from([0, 1, 2, 1 << 31])),
                                  data=draw(pointers), hw_error=draw(st.sampled_from([0, 0, 1]))))
    elif kind == "bytes":
        arg = draw(st.binary(max_size=96))
    else:
        arg = draw(st.one_of(pointers, st.integers(0, 64)))
    return on_vcpu, req, arg


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(stage=st.integers(0, 2), scratch=st.binary(min_size=64, max_size=4 * P),
       ops=st.lists(calls(), max_size=6),
       guest=st.lists(st.tuples(st.sampled_from(["accept", "release", "map_gpa", "quote", "read"]),
                                gpas, st.integers(0, 3), st.integers(0, 1 << 22)), max_size=4),
       connect=st.booleans())
def test_td_ioctls_and_tdcalls_only_raise_oserror(tdx_kernel, stage, scratch, ops, guest, connect):
    k = tdx_kernel(tdx_connect=connect)
    t = Td(k)
    vcpu = None
    if stage >= 1:
        t.split_irqchip()
        t.enable_map_gpa_exit()
        t.init_vm()
        t.create_vcpus()
        t.memslot()
        t.set_private()
        vcpu = t.vcpu
    if stage == 2:
        t.finalize()
    SCRATCH[:len(scratch)] = scratch
    for on_vcpu, req, arg in ops:
        fd = vcpu if on_vcpu and vcpu is not None else t.vm
        if fd == vcpu and req == K.KVM_RUN:
            # the guest has nothing to run: a TD's vCPU would halt in the kernel until a
            # signal, which is pending here (EINTR, KVM_EXIT_INTR)
            t.vmobj.vcpus[0].kick()
        try:
            k.ioctl(fd, req, arg)
        except OSError:
            pass
    if stage == 2 and vcpu is not None and not t.vmobj.dead:
        g = t.guest()
        for what, gpa, level, size in guest:
            if what == "accept":
                g.tdx.accept(gpa, level)
            elif what == "release":
                g.tdx.release(gpa, level)
            elif what == "map_gpa":
                g.tdx.map_gpa(gpa, size)
            elif what == "quote":
                g.tdx.get_quote(gpa, size)
            else:
                g.read(gpa & ((1 << 48) - 1), 8)
        g.stop()  # a TD's vCPU halts in the kernel once its script is done
        for _ in range(6):
            try:
                if t.run() == K.KVM_EXIT_INTR:
                    break
            except OSError:
                g.clear()
                g.stop()
    k.close_all()
