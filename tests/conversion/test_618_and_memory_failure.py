"""linux-6.18 has no in-place conversion (only VM-level KVM_SET_MEMORY_ATTRIBUTES), and
Kernel.memory_failure on a guest_memfd page (host side: SIGBUS)."""

import pytest

import kmock
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K

from ._util import (INIT_SHARED, MMAP, PRIVATE, P, RfcV2, V8, Env, err, errno, native_faults,
                    native_readable, sigbus_at)


@pytest.mark.parametrize("req", [G.KVM_SET_MEMORY_ATTRIBUTES2, G.KVM_GMEM_CONVERT_SHARED,
                                 G.KVM_GMEM_CONVERT_PRIVATE])
@pytest.mark.parametrize("arg", ["struct", "null"])
def test_618_gmem_ioctls_enotty(k618, req, arg):
    env = Env(k618, flags=MMAP | INIT_SHARED, vm_type=K.KVM_X86_DEFAULT_VM)
    a = 0 if arg == "null" else bytearray(128)
    assert err(k618.ioctl, env.gmem, req, a) == errno.ENOTTY


def test_618_caps_absent(k618):
    env = Env(k618, bind=False)
    for cap in (240, 241, 242, 250):
        assert k618.ioctl(env.kvm, K.KVM_CHECK_EXTENSION, cap) == 0
        assert k618.ioctl(env.vm, K.KVM_CHECK_EXTENSION, cap) == 0


def test_618_vm_level_attributes_only(k618):
    """The VM ioctl decides private/shared; the gmem's host view is unchanged by it."""
    env = Env(k618, flags=MMAP | INIT_SHARED, vm_type=K.KVM_X86_DEFAULT_VM, bind=False)
    swp = Env(k618, bind=False)
    a = K.kvm_memory_attributes(address=0, size=P, attributes=PRIVATE, flags=0)
    assert k618.ioctl(swp.vm, K.KVM_SET_MEMORY_ATTRIBUTES, a) == 0
    assert err(k618.ioctl, env.vm, K.KVM_SET_MEMORY_ATTRIBUTES, a) == errno.EINVAL
    assert sorted(v["private_gfns"] for v in k618.snapshot()["vms"]) == [0, 1]
    m = env.mmap()
    m[0] = 1
    assert m[0] == 1


# --- memory failure ---------------------------------------------------------------------


@pytest.fixture(params=["v8", "rfc-v2", "618"])
def mf_env(request):
    if request.param == "v8":
        k = kmock.Kernel(profile="gmem-attributes-v8")
        env = V8(k, size=4 * P, flags=MMAP | INIT_SHARED)
    elif request.param == "rfc-v2":
        k = kmock.Kernel(profile="gmem-convert-rfc-v2")
        env = RfcV2(k, size=4 * P)
    else:
        k = kmock.Kernel(profile="linux-6.18")
        env = Env(k, size=4 * P, flags=MMAP | INIT_SHARED, vm_type=K.KVM_X86_DEFAULT_VM)
    yield env
    k.close_all()


def test_memory_failure_host_sigbus(mf_env):
    env, k = mf_env, mf_env.k
    m = env.mmap()
    m[0:4 * P] = b"\x11" * (4 * P)
    k.memory_failure(env.gmem, 2 * P + 17)
    assert sigbus_at(m, 2 * P) == 2 * P
    assert sigbus_at(m, 0, 4 * P) == 2 * P
    assert native_faults(m, 2 * P)
    for i in (0, 1, 3):
        assert m[i * P] == 0x11 and native_readable(m, i * P)
    late = env.mmap()  # a mapping made afterwards faults there too
    assert sigbus_at(late, 2 * P) == 2 * P and native_faults(late, 2 * P)
    assert env.gmem_snapshot()["poisoned_pages"] == 1
    with pytest.raises(kmock.SigBus) as e:
        m[P:3 * P] = b"\x22" * (2 * P)  # a write stops at the poisoned page
    assert e.value.offset == 2 * P and m[P] == 0x22


def test_memory_failure_survives_conversions(mf_env):
    """A to-private + to-shared round trip does not map the poisoned page back."""
    env, k = mf_env, mf_env.k
    if not hasattr(env, "to_private"):
        pytest.skip("linux-6.18 has no in-place conversion")
    m = env.mmap()
    k.memory_failure(env.gmem, P)
    env.to_private(0, 4 * P)
    env.to_shared(0, 4 * P)
    assert sigbus_at(m, P) == P and native_faults(m, P)
    assert native_readable(m, 0) and native_readable(m, 2 * P)


def test_memory_failure_bad_args(k8):
    env = V8(k8)
    assert err(k8.memory_failure, env.gmem, 4 * P) == errno.EINVAL
    assert err(k8.memory_failure, env.vm, 0) == errno.EINVAL
