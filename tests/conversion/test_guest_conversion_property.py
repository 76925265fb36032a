"""Property test across guest execution and in-place conversion, on both conversion UAPIs.

Random interleavings of guest reads/writes (of either kind, or as the attribute says;
a VMM loop converts on KVM_EXIT_MEMORY_FAULT), conversions of random ranges, PUNCH_HOLE,
pins, extra host mappings and memory failures keep the invariants of the issue:

* no host mapping of a private (or poisoned) page: kmock raises SigBus and the native
  address really faults; shared pages read the same natively and through the mapping;
* no stage-2 mapping of the wrong kind, of an unallocated page, or of a poisoned page
  (``Stage2.audit`` plus the poison check);
* a conversion that fails (EAGAIN on a pin) changes nothing: snapshot and bytes.
"""

import errno

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kmock
from kmock.errors import EHWPOISON
from kmock.uapi import kvm as K

from ._util import GPA, INIT_SHARED, MMAP, P, PRIVATE, SUPPORT_SHARED, RfcV2, V8, native_faults

NPAGES = 8
pg = st.integers(0, NPAGES - 1)
ops = st.lists(st.one_of(
    st.tuples(st.just("guest_read"), pg, st.sampled_from([None, True, False])),
    st.tuples(st.just("guest_write"), pg, st.sampled_from([None, True, False]), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("convert"), pg, st.integers(1, 4), st.booleans()),
    st.tuples(st.just("punch"), pg, st.integers(1, 3)),
    st.tuples(st.just("pin"), pg),
    st.tuples(st.just("unpin"),),
    st.tuples(st.just("mmap"),),
    st.tuples(st.just("munmap"),),
    st.tuples(st.just("host_write"), pg, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("poison"), pg),
), min_size=1, max_size=30)


def make(profile):
    k = kmock.Kernel(profile)
    if profile == "gmem-attributes-v8":
        env = V8(k, size=NPAGES * P, flags=MMAP | INIT_SHARED)
    else:
        env = RfcV2(k, size=NPAGES * P, flags=SUPPORT_SHARED)
    env.k.ioctl(env.vm, K.KVM_ENABLE_CAP, K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL,
                                                           args=(1 << K.KVM_HC_MAP_GPA_RANGE,)))
    return k, env


def convert(env, to_private, offset, size):
    """The profile's conversion ioctl; returns 0 or the errno."""
    if isinstance(env, V8):
        return env.set_attrs(offset, size, PRIVATE if to_private else 0)[0]
    return env.convert(to_private, offset, size)[0]


def guest_access(k, env, action):
    """KVM_RUN until the action completes, converting on memory faults like a VMM.

    Returns False when the VMM gives up (the conversion failed: a pin)."""
    script = k.vm(env.vm).vcpus[0].guest
    run = k.vm(env.vm).vcpus[0].run
    for _ in range(4):
        try:
            k.ioctl(env.vcpu, K.KVM_RUN, 0)
        except OSError as e:
            if e.errno == EHWPOISON:
                script.clear()
                return False
            assert e.errno == errno.EFAULT and run.exit_reason == K.KVM_EXIT_MEMORY_FAULT
            mf = run.memory_fault
            private = bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE)
            off = mf.gpa - GPA
            if convert(env, private, off, mf.size) != 0:
                script.clear()
                return False
            continue
        if action.done:
            return True
    script.clear()
    return False


def check_invariants(k, env, mappings):
    vm = k.vm(env.vm)
    assert vm.stage2.audit(vm) == []
    inode = k.file(env.gmem).inode
    for i in range(NPAGES):
        bad = bool(inode.attrs.get(i) & PRIVATE) or bool(
            inode.poisoned is not None and inode.poisoned.get(i))
        if inode.poisoned is not None and inode.poisoned.get(i):
            assert vm.stage2_lookup((GPA >> 12) + i) is None, f"poisoned page {i} in stage-2"
        for m in mappings:
            if bad:
                with pytest.raises(kmock.SigBus):
                    m[i * P]
                assert native_faults(m, i * P), f"private page {i} natively readable"
            else:
                data = m[i * P:(i + 1) * P]
                assert kmock._libc.read_user(m.address + i * P, P)[0] == data


@pytest.mark.parametrize("profile", ["gmem-attributes-v8", "gmem-convert-rfc-v2"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(steps=ops)
def test_guest_accesses_and_conversions_keep_the_invariants(profile, steps):
    k, env = make(profile)
    try:
        mappings = [env.mmap()]
        pins = []
        script = k.vm(env.vm).vcpus[0].guest
        for op in steps:
            name = op[0]
            if name == "guest_read":
                guest_access(k, env, script.read(GPA + op[1] * P, 16, private=op[2]))
            elif name == "guest_write":
                guest_access(k, env, script.write(GPA + op[1] * P, op[3], private=op[2]))
            elif name == "convert":
                start, n = op[1], min(op[2], NPAGES - op[1])
                before = k.snapshot()["guest_memfds"][0]
                data = bytes(k.file(env.gmem).inode.read(0, NPAGES * P))
                r = convert(env, op[3], start * P, n * P)
                if r != 0:
                    assert r == errno.EAGAIN
                    assert k.snapshot()["guest_memfds"][0] == before  # atomic on failure
                    assert k.file(env.gmem).inode.read(0, NPAGES * P) == data
                else:
                    # a conversion never changes bytes by itself
                    assert k.file(env.gmem).inode.read(0, NPAGES * P) == data
            elif name == "punch":
                n = min(op[2], NPAGES - op[1])
                env.punch(op[1] * P, n * P)
            elif name == "pin":
                try:
                    pins.append(k.gup_pin(mappings[0], op[1] * P, P))
                except OSError as e:
                    assert e.errno == errno.EFAULT  # private or poisoned: GUP fails
            elif name == "unpin" and pins:
                pins.pop().unpin()
            elif name == "mmap" and len(mappings) < 3:
                mappings.append(env.mmap())
            elif name == "munmap" and len(mappings) > 1:
                mappings.pop().close()
            elif name == "host_write":
                try:
                    mappings[0][op[1] * P:op[1] * P + len(op[2])] = op[2]
                except kmock.SigBus:
                    pass
            elif name == "poison":
                k.memory_failure(env.gmem, op[1] * P)
            check_invariants(k, env, mappings)
    finally:
        k.close_all()
