"""mmap(2) of a guest_memfd (and of the other kmock files): do_mmap's checks in the
kernel's order, without /dev/kvm (kmock.testing.conformance_gmem_fops compares the same
calls with the real kernel).

Sources (Linux 6.18): arch/x86/kernel/sys_x86_64.c sys_mmap; mm/mmap.c ksys_mmap_pgoff,
do_mmap, file_mmap_ok; fs/anon_inodes.c (the anon_inode mount is SB_I_NOEXEC);
virt/kvm/guest_memfd.c kvm_gmem_mmap.
"""

import errno

import pytest

from kmock import _libc
from kmock.file import MAP_GROWSDOWN, MAP_HUGETLB, MAP_SYNC, check_mmap_args
from kmock.uapi import kvm as K

from ._util import INIT_SHARED, MMAP, RW, SHARED, P, create_gmem, create_vm, err

X = _libc.PROT_EXEC
VALIDATE = _libc.MAP_SHARED_VALIDATE
ANON = _libc.MAP_ANONYMOUS


@pytest.mark.parametrize("flags", [0, MMAP, INIT_SHARED, MMAP | INIT_SHARED])
def test_exec_is_eperm_before_the_gmem_mmap(k, flags):
    """do_mmap: path_noexec -> EPERM comes before kvm_gmem_mmap's ENODEV."""
    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, flags)
    assert err(k.mmap, g, P, RW | X, SHARED) == errno.EPERM
    assert err(k.mmap, g, P, _libc.PROT_READ | X, SHARED) == errno.EPERM


@pytest.mark.parametrize("flags", [0, MMAP | INIT_SHARED])
def test_flag_checks_come_before_the_gmem_mmap(k, flags):
    """ksys_mmap_pgoff: MAP_HUGETLB EINVAL; do_mmap: MAP_SHARED_VALIDATE with a flag
    outside LEGACY_MAP_MASK (MAP_SYNC: no FOP_MMAP_SYNC) EOPNOTSUPP; VM_GROWSDOWN EINVAL."""
    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, flags)
    assert err(k.mmap, g, P, RW, SHARED | MAP_HUGETLB) == errno.EINVAL
    assert err(k.mmap, g, P, RW, VALIDATE | MAP_SYNC) == errno.EOPNOTSUPP
    assert err(k.mmap, g, P, RW, VALIDATE | 0x200000) == errno.EOPNOTSUPP
    assert err(k.mmap, g, P, RW, SHARED | MAP_GROWSDOWN) == errno.EINVAL


def test_shared_ignores_unknown_flags(k):
    """do_mmap: MAP_SHARED drops the flags outside LEGACY_MAP_MASK."""
    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    with k.mmap(g, P, RW, SHARED | MAP_SYNC | 0x200000) as m:
        m[0] = 7
        assert m[0] == 7


def test_offset_limit_of_a_regular_file(k):
    """file_mmap_ok: a guest_memfd is S_IFREG, so offset + length may not pass
    MAX_LFS_FILESIZE (EOVERFLOW); an anonymous inode's limit is ULONG_MAX."""
    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    with k.mmap(g, P, RW, SHARED, 2**63 - 2 * P) as m:
        assert len(m) == P
    assert err(k.mmap, g, P, RW, SHARED, 2**63 - P) == errno.EOVERFLOW
    assert err(k.mmap, g, 2 * P, RW, SHARED, 2**63 - 2 * P) == errno.EOVERFLOW
    # an anonymous inode (mode without a file type): only ULONG_MAX bounds it
    check_mmap_args(P, RW, SHARED, 2**63 - P, i_mode=0o600)
    assert err(check_mmap_args, P, RW, SHARED, -P, 0o600) == errno.EOVERFLOW


def test_length_checks_in_order(k):
    """sys_mmap's alignment EINVAL first; do_mmap: !len EINVAL, PAGE_ALIGN(len) == 0 or
    len > TASK_SIZE ENOMEM before file_mmap_ok's EOVERFLOW."""
    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, 0)
    assert err(k.mmap, g, 0, RW, SHARED, 100) == errno.EINVAL
    assert err(k.mmap, g, 0, RW, SHARED) == errno.EINVAL
    assert err(k.mmap, g, 2**64 - 1, RW, SHARED) == errno.ENOMEM
    assert err(k.mmap, g, 1 << 47, RW, SHARED, 2**63 - P) == errno.ENOMEM
    assert err(k.mmap, g, P, RW, SHARED, 2**63 - P) == errno.EOVERFLOW
    assert err(k.mmap, g, P, RW, SHARED) == errno.ENODEV


def test_anonymous_mapping_ignores_the_gmem_fd(k):
    """ksys_mmap_pgoff: with MAP_ANONYMOUS the fd is not looked at: anonymous memory,
    not the file's pages (PROT_EXEC allowed)."""
    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    a = k.mmap(g, P, RW | X, _libc.MAP_PRIVATE | ANON)
    a[0:4] = b"anon"
    s = k.mmap(g, P, RW, SHARED | ANON)
    s[0] = 1
    with k.mmap(g, P, RW, SHARED) as m:
        assert m[0:4] == b"\0\0\0\0"
    assert a[0:4] == b"anon" and s[0] == 1
    a.close()
    s.close()


def test_vm_and_vcpu_fds(k):
    """The same checks on anon-inode files: the VM fd has no ->mmap (EPERM for exec,
    then ENODEV before the MAP_GROWSDOWN check), the vCPU fd has one."""
    _, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert err(k.mmap, vm, P, RW | X, SHARED) == errno.EPERM
    assert err(k.mmap, vm, P, RW, SHARED | MAP_GROWSDOWN) == errno.ENODEV
    assert err(k.mmap, vm, P, RW, VALIDATE | MAP_SYNC) == errno.EOPNOTSUPP
    assert err(k.mmap, vcpu, P, RW | X, SHARED) == errno.EPERM
    assert err(k.mmap, vcpu, P, RW, SHARED | MAP_GROWSDOWN) == errno.EINVAL
    assert err(k.mmap, vcpu, P, RW, SHARED | MAP_HUGETLB) == errno.EINVAL


def test_write_only_mapping_reads(k):
    """x86 (and arm64) have no write-only PTE: a PROT_WRITE mapping reads, in C and
    through the mapping object; PROT_NONE does not (SIGSEGV: KmockUsageError)."""
    from kmock.errors import KmockUsageError

    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    with k.mmap(g, P, _libc.PROT_WRITE, SHARED) as m:
        m[0:4] = b"wxyz"
        assert m[0:4] == b"wxyz"
    with k.mmap(g, P, _libc.PROT_NONE, SHARED) as m, pytest.raises(KmockUsageError):
        m[0]


def test_mapping_object_as_mmap(k):
    """Extended slices read and write as mmap.mmap's; len() of a closed mapping raises
    ValueError; a SIGBUS in an extended write leaves the bytes before it written."""
    from kmock.errors import SigBus

    _, vm = create_vm(k)
    g = create_gmem(k, vm, P, MMAP | INIT_SHARED)
    m = k.mmap(g, 2 * P, RW, SHARED)
    m[0:16:4] = b"abcd"
    assert m[0:16:4] == b"abcd" and m[12::-4] == b"dcba" and m[1:16:4] == b"\0" * 4
    with pytest.raises(IndexError):
        m[0:16:4] = b"abc"
    with pytest.raises(TypeError):
        m[0:16:4] = 4
    with pytest.raises(SigBus) as e:
        m[P - 8:P + 8:4] = b"wxyz"
    assert e.value.offset == P and m[P - 8:P:4] == b"wx"
    m.close()
    with pytest.raises(ValueError):
        len(m)
