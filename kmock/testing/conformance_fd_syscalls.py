"""Conformance scenarios of the checks a syscall makes before it looks its fd up.

Registered into kmock.testing.conformance.SCENARIOS when that module is imported.

Sources (Linux 6.18): fs/open.c do_sys_ftruncate (a negative length is EINVAL before
fdget); arch/x86/kernel/sys_x86_64.c sys_mmap (an offset that is not page-aligned is
EINVAL before ksys_mmap_pgoff); mm/mmap.c ksys_mmap_pgoff (with MAP_ANONYMOUS the fd is
never looked up: anonymous memory, whatever the fd names) and do_mmap (length 0 EINVAL).
"""

from ..uapi import kvm as K
from .conformance import (
    INIT_SHARED,
    MAP_PRIVATE,
    MAP_SHARED,
    MMAP,
    PROT_RW,
    create_gmem,
    create_vm,
    open_kvm,
    scenario,
)

P = 4096
PROT_EXEC = 4
MAP_ANONYMOUS = 0x20
#: an fd number no process here has open (fget fails: EBADF)
BAD_FD = 1 << 20


@scenario("fd_checks_before_fdget",
          "ftruncate with a negative length is EINVAL and mmap with an unaligned offset is "
          "EINVAL before the fd is looked up (do_sys_ftruncate, sys_mmap); mmap with "
          "MAP_ANONYMOUS never looks the fd up (ksys_mmap_pgoff): a bad fd and a VM, "
          "vCPU or guest_memfd fd all give anonymous memory")
def fd_checks_before_fdget(sys, rec):
    rec.call("bad fd: ftruncate -1", sys.ftruncate, BAD_FD, -1)
    rec.call("bad fd: ftruncate 0", sys.ftruncate, BAD_FD, 0)
    rec.call("bad fd: mmap offset 1", sys.mmap, BAD_FD, P, PROT_RW, MAP_SHARED, 1)
    rec.call("bad fd: mmap offset P/2 ANONYMOUS", sys.mmap, BAD_FD, P, PROT_RW,
             MAP_PRIVATE | MAP_ANONYMOUS, P // 2)
    rec.call("bad fd: mmap", sys.mmap, BAD_FD, P, PROT_RW, MAP_SHARED, 0)
    rec.call("bad fd: mmap length 0 ANONYMOUS", sys.mmap, BAD_FD, 0, PROT_RW,
             MAP_PRIVATE | MAP_ANONYMOUS)
    a = rec.call("bad fd: mmap SHARED|ANONYMOUS", sys.mmap, BAD_FD, P, PROT_RW,
                 MAP_SHARED | MAP_ANONYMOUS)
    if a is not None:
        rec.access("bad fd: anonymous: write", a, slice(0, 2), b"ok")
        rec.access("bad fd: anonymous: read", a, slice(0, 2))
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    if vm is None:
        return
    vcpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    g = create_gmem(sys, rec, vm, 4 * P, MMAP | INIT_SHARED)
    for name, fd in (("/dev/kvm", kvm), ("VM", vm), ("vCPU", vcpu), ("gmem", g)):
        if fd is None:
            continue
        rec.call(f"{name}: ftruncate -1", sys.ftruncate, fd, -1)
        rec.call(f"{name}: ftruncate -P", sys.ftruncate, fd, -P)
        rec.call(f"{name}: mmap offset 1", sys.mmap, fd, P, PROT_RW, MAP_SHARED, 1)
        rec.call(f"{name}: mmap offset P+8", sys.mmap, fd, P, PROT_RW, MAP_SHARED, P + 8)
        # past the vCPU's kvm_run pages and the gmem's size, with PROT_EXEC (EPERM on the
        # noexec anon_inode mount): only anonymous memory gives all 64 pages
        m = rec.call(f"{name}: mmap 64P RWX SHARED|ANONYMOUS", sys.mmap, fd, 64 * P,
                     PROT_RW | PROT_EXEC, MAP_SHARED | MAP_ANONYMOUS)
        if m is not None:
            rec.access(f"{name}: anonymous: write page 63", m, slice(63 * P, 63 * P + 2), b"hi")
            rec.access(f"{name}: anonymous: read page 63", m, slice(63 * P, 63 * P + 2))
            rec.call(f"{name}: munmap the anonymous mapping", m.close)
        rec.call(f"{name}: mmap P PRIVATE|ANONYMOUS offset -P", sys.mmap, fd, P, PROT_RW,
                 MAP_PRIVATE | MAP_ANONYMOUS, -P)
    if g is not None:
        m = rec.call("gmem: mmap the file", sys.mmap, g, P, PROT_RW, MAP_SHARED)
        if m is not None:
            rec.access("gmem: its page is still zero", m, slice(0, 2))
        rec.call("gmem: fstat size", lambda fd: sys.fstat(fd).st_size, g)
