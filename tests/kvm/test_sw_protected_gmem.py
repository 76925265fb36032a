"""guest_memfd on a SW_PROTECTED VM (reference §2.2 kvm_gmem_get_supported_flags, §4.1, §4.4)."""

import errno

import pytest

import kmock
from kmock.uapi import kvm as K

from ._util import INIT_SHARED, MMAP, P, RW, SHARED, SW_PROTECTED_VM, create_gmem, create_vm, err


@pytest.fixture
def swp(k):
    _, vm = create_vm(k, SW_PROTECTED_VM)
    return vm


def test_init_shared_rejected(k, swp):
    """§2.2: INIT_SHARED is not supported on a VM with private memory -> EINVAL (§4.1 rule 3)."""
    assert err(create_gmem, k, swp, 4 * P, INIT_SHARED) == errno.EINVAL
    assert err(create_gmem, k, swp, 4 * P, MMAP | INIT_SHARED) == errno.EINVAL


def test_flags_checked_before_size(k, swp):
    """§4.1 rule 1: flags first, then size; a bad size with a flag the VM accepts is EINVAL
    from the size check, and the bad flag decides when both are wrong (all EINVAL, so also
    check each rule alone)."""
    assert err(create_gmem, k, swp, 1, INIT_SHARED) == errno.EINVAL
    assert err(create_gmem, k, swp, 1, MMAP) == errno.EINVAL
    assert err(create_gmem, k, swp, 0, 1 << 2) == errno.EINVAL
    fd = create_gmem(k, swp, P, MMAP)
    assert fd >= 0


@pytest.mark.parametrize("bit", range(64))
def test_single_flag_bits(k, swp, bit):
    """ST-GMEM-618 test_guest_memfd_flags on SW_PROTECTED: only bits in the VM cap (1) work."""
    cap = k.ioctl(swp, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD_FLAGS)
    assert cap == MMAP
    if (1 << bit) & cap:
        k.close(create_gmem(k, swp, P, 1 << bit))
    else:
        assert err(create_gmem, k, swp, P, 1 << bit) == errno.EINVAL


def test_mmap_accepted_then_every_access_sigbus(k, swp):
    """§4.4: MMAP without INIT_SHARED: mmap succeeds; any read or write access is SIGBUS,
    including after fallocate allocated the page."""
    fd = create_gmem(k, swp, 4 * P, MMAP)
    m = k.mmap(fd, 4 * P, RW, SHARED)
    for off in (0, P, 4 * P - 1):
        with pytest.raises(kmock.SigBus) as ei:
            m[off]
        assert ei.value.offset == off
        with pytest.raises(kmock.SigBus):
            m[off] = 0xAA
    k.fallocate(fd, 1, 0, 4 * P)  # KEEP_SIZE: allocate
    with pytest.raises(kmock.SigBus) as ei:
        m[0:4 * P]
    assert ei.value.offset == 0
    with pytest.raises(kmock.SigBus):
        m[P:2 * P] = b"\xaa" * P
    m.close()


def test_map_private_einval_and_no_mmap_enodev(k, swp):
    """§4.4: MAP_PRIVATE -> EINVAL on an MMAP gmem; no MMAP flag -> ENODEV."""
    fd = create_gmem(k, swp, 4 * P, MMAP)
    from kmock import _libc

    assert err(k.mmap, fd, 4 * P, RW, _libc.MAP_PRIVATE) == errno.EINVAL
    fd0 = create_gmem(k, swp, 4 * P, 0)
    assert err(k.mmap, fd0, 4 * P, RW, SHARED) == errno.ENODEV
