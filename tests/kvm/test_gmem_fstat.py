"""fstat of a guest_memfd: identity and times as Linux 6.18 keeps them (without /dev/kvm;
kmock.testing.conformance_gmem_fops compares the same with the real kernel).

Sources: fs/anon_inodes.c anon_inode_getfile (one shared inode) and
anon_inode_create_getfile -> alloc_anon_inode (a new inode: get_next_ino,
current_fsuid/fsgid, times = now); virt/kvm/guest_memfd.c __kvm_gmem_create,
kvm_gmem_fallocate -> file_modified; mm/memory.c fault_dirty_shared_page.
"""

import os
import time

from kmock import _libc
from kmock.uapi import kvm as K

from ._util import INIT_SHARED, MMAP, RW, SHARED, P, create_gmem, create_vm, err


def test_identity(k):
    _, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    sv, sc = k.fstat(vm), k.fstat(vcpu)
    assert (sv.st_dev, sv.st_ino) == (sc.st_dev, sc.st_ino)  # the shared anon inode
    g1, g2 = create_gmem(k, vm), create_gmem(k, vm)
    s1, s2 = k.fstat(g1), k.fstat(g2)
    assert s1.st_dev == s2.st_dev == sv.st_dev
    assert len({s1.st_ino, s2.st_ino, sv.st_ino}) == 3
    assert (s1.st_uid, s1.st_gid) == (os.geteuid(), os.getegid())
    k.close(g2)
    g3 = create_gmem(k, vm)  # takes g2's recycled backing memfd
    assert k.fstat(g3).st_ino not in (s1.st_ino, s2.st_ino)


def test_times(k):
    _, vm = create_vm(k)
    t0 = time.time()
    g = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    st = k.fstat(g)
    assert t0 <= st.st_atime == st.st_mtime == st.st_ctime <= time.time()
    assert st.st_mtime_ns == int(st.st_mtime * 1e9)
    created = st.st_mtime
    err(k.fallocate, g, 1, 1, P)  # a failed call changes nothing
    err(k.ftruncate, g, 0)
    assert k.fstat(g).st_mtime == created
    k.fallocate(g, 1, 0, P)
    st = k.fstat(g)
    assert st.st_mtime == st.st_ctime > created and st.st_atime == created
    allocated = st.st_mtime
    k.fallocate(g, 3, 16 * P, P)  # a punch past EOF returns 0: file_modified
    assert k.fstat(g).st_mtime > allocated


def test_write_faults_update_mtime(k):
    """A write that faults (no PTE yet in this VMA) updates mtime; a read fault maps the
    page writable, so a write after it does not; a punch zaps the PTEs."""
    _, vm = create_vm(k)
    g = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
    m = k.mmap(g, 4 * P, RW, SHARED)
    before = k.fstat(g).st_mtime
    m[0:4]  # read fault: page 0 present
    m[0:4] = b"abcd"
    assert k.fstat(g).st_mtime == before
    m[P] = 1  # write fault on page 1
    after = k.fstat(g).st_mtime
    assert after > before
    m[P + 1] = 2
    assert k.fstat(g).st_mtime == after
    k.fallocate(g, 3, P, P)
    punched = k.fstat(g).st_mtime
    m[P] = 3  # the punch zapped page 1: a new fault
    assert k.fstat(g).st_mtime > punched
    m.close()


def test_populate_maps_the_pages(k):
    """MAP_POPULATE (without MAP_NONBLOCK) and MAP_LOCKED fault the pages in at mmap."""
    _, vm = create_vm(k)
    for flags, populated in ((SHARED | _libc.MAP_POPULATE, True), (SHARED | 0x2000, True),
                             (SHARED | _libc.MAP_POPULATE | 0x10000, False), (SHARED, False)):
        g = create_gmem(k, vm, 4 * P, MMAP | INIT_SHARED)
        m = k.mmap(g, 4 * P, RW, flags)
        before = k.fstat(g).st_mtime
        m[0:4 * P] = b"\1" * (4 * P)
        assert (k.fstat(g).st_mtime == before) is populated
        m.close()
    g = create_gmem(k, vm, 4 * P, MMAP)  # private pages: populate stops, mmap succeeds
    k.mmap(g, 4 * P, RW, SHARED | _libc.MAP_POPULATE).close()
