"""Conformance scenarios of every file operation on a guest_memfd fd and its mappings.

Registered into kmock.testing.conformance.SCENARIOS when that module is imported. Each
scenario runs on guest_memfds of a default VM created with every combination of the
flags the VM offers (KVM_CAP_GUEST_MEMFD_FLAGS: 0, MMAP, INIT_SHARED, MMAP|INIT_SHARED
on 6.18).

Sources (Linux 6.18): virt/kvm/guest_memfd.c kvm_gmem_fops (mmap, open, release,
fallocate only), kvm_gmem_fallocate, kvm_gmem_allocate, kvm_gmem_punch_hole,
kvm_gmem_mmap, kvm_gmem_fault_user_mapping, kvm_gmem_setattr, __kvm_gmem_create; the
VFS paths they fall back to: fs/read_write.c vfs_read / vfs_write (no ->read: EINVAL),
ksys_pread64 / ksys_pwrite64 (negative offset EINVAL, no FMODE_PREAD: ESPIPE),
ksys_lseek (whence > SEEK_MAX EINVAL) and vfs_llseek (no FMODE_LSEEK: ESPIPE);
fs/open.c vfs_fallocate, do_sys_ftruncate, chmod_common / notify_change (->setattr);
fs/sync.c vfs_fsync_range (no ->fsync: EINVAL); mm/mmap.c ksys_mmap_pgoff (MAP_HUGETLB on
a file that is not hugetlbfs: EINVAL), do_mmap (the order of its checks, file_mmap_ok,
MAP_SHARED_VALIDATE's flag mask, path_noexec: the anon_inode mount is SB_I_NOEXEC);
arch/x86/kernel/sys_x86_64.c sys_mmap (unaligned offset EINVAL first).

Not in the syscall API (no scenario can compare them). What 6.18.44 answers on a
guest_memfd, probed with os/fcntl/ctypes on this host:

* fcntl (fs/fcntl.c do_fcntl): F_GETFL O_RDWR|O_LARGEFILE; F_GETFD 0 (get_unused_fd_flags(0));
  F_SETFL O_NONBLOCK / O_APPEND 0, O_DIRECT EINVAL (setfl: no FMODE_CAN_ODIRECT);
  F_ADD_SEALS / F_GET_SEALS EINVAL (memfd_fcntl: not a memfd); F_GETLK F_UNLCK, F_SETLK and
  flock 0; F_SETLEASE F_RDLCK 0, F_WRLCK EAGAIN (fs/locks.c check_conflicting_open);
  F_GETPIPE_SZ EBADF (not a pipe); F_SETSIG 0.
* readv/writev EINVAL, preadv/pwritev ESPIPE (as read/pread); fdatasync EINVAL;
  posix_fadvise 0; fchown/futimes EINVAL (kvm_gmem_setattr); sendfile from it ESPIPE;
  copy_file_range EINVAL; reopening /proc/self/fd/N ENXIO; readlink gives
  "anon_inode:[kvm-gmem]".
* madvise on an MMAP|INIT_SHARED mapping (mm/madvise.c): DONTNEED (data kept), REMOVE
  (vfs_fallocate PUNCH_HOLE|KEEP_SIZE: reads 0 after), WILLNEED, COLD, PAGEOUT,
  POPULATE_READ/WRITE, DONTFORK/DOFORK, MERGEABLE, (NO)HUGEPAGE, RANDOM, DONTDUMP,
  GUARD_INSTALL 0; FREE, WIPEONFORK, COLLAPSE and unknown advice EINVAL.
* mprotect: NONE, R, RW 0; anything with PROT_EXEC EACCES (do_mmap cleared VM_MAYEXEC).
* msync: MS_ASYNC, MS_INVALIDATE 0; MS_SYNC EINVAL (vfs_fsync_range: no ->fsync), so
  mmap.mmap.flush() raises; MS_SYNC|MS_ASYNC and unknown bits EINVAL. mmap.mmap.resize()
  EINVAL (ftruncate: kvm_gmem_setattr).
"""

import os
import time

from ..uapi import kvm as K
from .conformance import (
    COLLAPSE,
    INIT_SHARED,
    INSERT,
    KEEP,
    MAP_POPULATE,
    MAP_PRIVATE,
    MAP_SHARED,
    MAP_SHARED_VALIDATE,
    MMAP,
    PROT_READ,
    PROT_RW,
    PROT_WRITE,
    PUNCH,
    UNSHARE,
    WRITE_ZEROES,
    ZERO,
    check_ext,
    create_gmem,
    create_vm,
    open_kvm,
    scenario,
)

P = 4096
SIZE = 4 * P
PROT_NONE = 0
PROT_EXEC = 4
NO_HIDE_STALE = 0x04
MAP_GROWSDOWN = 0x0100
MAP_LOCKED = 0x2000
MAP_NONBLOCK = 0x10000
MAP_NORESERVE = 0x4000
MAP_HUGETLB = 0x40000
MAP_SYNC = 0x80000
MAP_DROPPABLE = 0x08
MAP_ANONYMOUS = 0x20
MAP_32BIT = 0x40
#: x86 (arch/x86/include/uapi/asm/mman.h), not in LEGACY_MAP_MASK
MAP_ABOVE4G = 0x80
MAP_HUGE_2MB = 21 << 26
#: a bit outside LEGACY_MAP_MASK and MAP_SYNC (include/linux/mman.h)
MAP_UNKNOWN = 0x200000


def _gmems(sys, rec, size=SIZE):
    """Yield (tag, flags, fd) for a guest_memfd of ``size`` per combination of the
    flags a default VM offers; each is closed after its turn."""
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    offered = check_ext(sys, rec, vm, K.KVM_CAP_GUEST_MEMFD_FLAGS, "VM") or 0
    for flags in range(offered + 1):
        if flags & ~offered:
            continue
        tag = f"[flags {flags:#x}]"
        fd = create_gmem(sys, rec, vm, size, flags, label=f"{tag} create {size:#x}")
        if fd is None:
            continue
        yield tag, flags, fd
        rec.close(f"{tag} close", fd)


def _shared_mapping(flags):
    return flags & MMAP and flags & INIT_SHARED


@scenario("gmem_fops_read_write",
          "read/write EINVAL (no ->read/->write), pread/pwrite ESPIPE (no FMODE_PREAD) but "
          "EINVAL for a negative offset first, for any count and offset, before and after "
          "the file holds data")
def gmem_fops_read_write(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        for when in ("fresh", "after data"):
            if when == "after data":
                rec.call(f"{tag} fallocate KEEP 0..4P", sys.fallocate, g, KEEP, 0, SIZE)
                if _shared_mapping(flags):
                    m = rec.call(f"{tag} mmap 4P", sys.mmap, g, SIZE, PROT_RW, MAP_SHARED)
                    if m is not None:
                        rec.access(f"{tag} write 0x5a through the mapping", m,
                                   slice(0, SIZE), b"\x5a" * SIZE)
            t = f"{tag} {when}:"
            rec.call(f"{t} read 0", sys.read, g, 0)
            rec.call(f"{t} read 64", sys.read, g, 64)
            rec.call(f"{t} read 1 MiB", sys.read, g, 1 << 20)
            rec.call(f"{t} write b''", sys.write, g, b"")
            rec.call(f"{t} write 64", sys.write, g, b"\1" * 64)
            rec.call(f"{t} pread 0 @0", sys.pread, g, 0, 0)
            rec.call(f"{t} pread 64 @0", sys.pread, g, 64, 0)
            rec.call(f"{t} pread 64 @4P (EOF)", sys.pread, g, 64, SIZE)
            rec.call(f"{t} pread 64 @2^63-1", sys.pread, g, 64, 2**63 - 1)
            rec.call(f"{t} pread 64 @-1", sys.pread, g, 64, -1)
            rec.call(f"{t} pread 0 @-1", sys.pread, g, 0, -1)
            rec.call(f"{t} pwrite 64 @0", sys.pwrite, g, b"\1" * 64, 0)
            rec.call(f"{t} pwrite b'' @0", sys.pwrite, g, b"", 0)
            rec.call(f"{t} pwrite 64 @-P", sys.pwrite, g, b"\1" * 64, -P)
        rec.call(f"{tag} fstat (size unchanged)", sys.fstat, g)


SEEKS = ((os.SEEK_SET, "SET"), (os.SEEK_CUR, "CUR"), (os.SEEK_END, "END"),
         (os.SEEK_DATA, "DATA"), (os.SEEK_HOLE, "HOLE"))


@scenario("gmem_fops_lseek",
          "lseek: every whence 0..4 at any position ESPIPE (no FMODE_LSEEK); whence 5, 0x7fffffff "
          "and -1 EINVAL (ksys_lseek checks whence before vfs_llseek); a closed fd EBADF first")
def gmem_fops_lseek(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        if flags == 0:
            rec.call(f"{tag} fallocate KEEP P..2P (data for SEEK_DATA)", sys.fallocate, g, KEEP, P, P)
        for how, name in SEEKS:
            for pos in (0, P, -1, SIZE, 2**63 - 1):
                rec.call(f"{tag} lseek {pos:#x} SEEK_{name}", sys.lseek, g, pos, how)
        for how in (5, 0x7FFFFFFF, -1):
            rec.call(f"{tag} lseek 0 whence {how}", sys.lseek, g, 0, how)
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, SIZE, 0, label="gmem to close")
    if g is not None:
        rec.close("close it", g)
        rec.call("lseek on the closed fd, whence 5 (EBADF first)", sys.lseek, g, 0, 5)
        rec.call("lseek on the closed fd, SEEK_SET", sys.lseek, g, 0, os.SEEK_SET)


def _stat_props(rec, label, st, size):
    if st is None:
        return
    rec.record(f"{label}: (S_IFREG|0600, size, blksize 4096, blocks 0, nlink 1)",
               (st.st_mode, st.st_size == size, st.st_blksize, st.st_blocks, st.st_nlink))


@scenario("gmem_fops_fstat",
          "fstat: S_IFREG|0600, st_size = the created size, st_blksize 4096, st_blocks 0 "
          "(anon inode: nothing accounts i_blocks) before and after allocation, writes through "
          "a mapping and PUNCH_HOLE; st_size unchanged by everything")
def gmem_fops_fstat(sys, rec):
    for size in (P, SIZE, 1 << 40):
        for tag, flags, g in _gmems(sys, rec, size):
            tag = f"{tag} size {size:#x}"
            _stat_props(rec, f"{tag} fresh", rec.call(f"{tag} fstat", sys.fstat, g), size)
            if size > SIZE:
                continue
            rec.call(f"{tag} fallocate KEEP all", sys.fallocate, g, KEEP, 0, size)
            _stat_props(rec, f"{tag} allocated", rec.call(f"{tag} fstat allocated", sys.fstat, g),
                        size)
            if _shared_mapping(flags):
                m = rec.call(f"{tag} mmap", sys.mmap, g, size, PROT_RW, MAP_SHARED)
                if m is not None:
                    rec.access(f"{tag} write all", m, slice(0, size), b"\x33" * size)
                    _stat_props(rec, f"{tag} written",
                                rec.call(f"{tag} fstat written", sys.fstat, g), size)
            rec.call(f"{tag} punch all", sys.fallocate, g, KEEP | PUNCH, 0, size)
            _stat_props(rec, f"{tag} punched", rec.call(f"{tag} fstat punched", sys.fstat, g), size)


@scenario("gmem_fops_setattr",
          "ftruncate: negative length EINVAL (do_sys_ftruncate), any other length EINVAL "
          "(kvm_gmem_setattr), fchmod EINVAL (setattr), fsync EINVAL (no ->fsync); "
          "contents and size survive")
def gmem_fops_setattr(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        m = None
        if _shared_mapping(flags):
            m = rec.call(f"{tag} mmap", sys.mmap, g, SIZE, PROT_RW, MAP_SHARED)
            if m is not None:
                rec.access(f"{tag} write 0x77", m, slice(0, SIZE), b"\x77" * SIZE)
        for length in (-1, -P, 0, P, SIZE, 2 * SIZE, 2**63 - 1):
            rec.call(f"{tag} ftruncate {length:#x}", sys.ftruncate, g, length)
        for mode in (0o600, 0o644, 0o777, 0o4755, 0):
            rec.call(f"{tag} fchmod {mode:#o}", sys.fchmod, g, mode)
        rec.call(f"{tag} fsync", sys.fsync, g)
        rec.call(f"{tag} fstat", sys.fstat, g)
        if m is not None:
            rec.access(f"{tag} contents kept", m, slice(0, SIZE))


#: the fallocate mode bits of include/uapi/linux/falloc.h (6.18: WRITE_ZEROES is 0x80)
FALLOC_BITS = (KEEP, PUNCH, NO_HIDE_STALE, COLLAPSE, ZERO, INSERT, UNSHARE, WRITE_ZEROES)


@scenario("gmem_fops_fallocate_modes",
          "fallocate over [P, 2P) with every combination of the eight mode bits and unknown "
          "bits: vfs_fallocate's EOPNOTSUPP rules (unknown bits, exclusive modes, PUNCH "
          "without KEEP, COLLAPSE/INSERT/WRITE_ZEROES with KEEP) then kvm_gmem_fallocate's "
          "(KEEP_SIZE required, only KEEP|PUNCH): only KEEP and KEEP|PUNCH succeed")
def gmem_fops_fallocate_modes(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    g = create_gmem(sys, rec, vm, SIZE, 0)
    if g is None:
        return
    for mode in range(256):
        rec.call(f"mode {mode:#04x}", sys.fallocate, g, mode, P, P)
    for mode in (0x100, KEEP | 0x100, KEEP | PUNCH | 0x200, KEEP | 0x40000000, -0x80000000, -1):
        rec.call(f"mode {mode:#x}", sys.fallocate, g, mode, P, P)
    # the range checks come first: an unsupported mode with len 0 is EINVAL
    rec.call("mode ZERO len 0", sys.fallocate, g, ZERO, 0, 0)
    rec.call("mode 0x100 off -1", sys.fallocate, g, 0x100, -1, P)
    rec.call("mode COLLAPSE|KEEP off 2^62 len 2^62", sys.fallocate, g, COLLAPSE | KEEP, 2**62, 2**62)
    rec.call("mode 0 off 2^62 len 2^62 (EFBIG before ->fallocate)", sys.fallocate, g, 0, 2**62, 2**62)


FALLOC_RANGES = (
    (0, 0), (0, -P), (-P, P), (-1, -1), (P, 0),
    (1, P), (P - 1, P), (0, P - 1), (0, 1), (P, P + 1),
    (0, SIZE), (P, P), (3 * P, P), (3 * P, 2 * P), (SIZE, P), (SIZE + P, P), (8 * SIZE, P),
    (0, 2**62), (2**62, 2**62), (2**62, 2**62 - P),
    (2**63 - 2 * P, P), (2**63 - P, P), (2**63 - P, 2 * P), (2**63 - 1, 1),
    (1, 2**63 - 2), (0, 2**63 - 1), (P, 2**63 - P),
)


@scenario("gmem_fops_fallocate_ranges",
          "offset/len edge cases for modes 0, KEEP, KEEP|PUNCH, ZERO and PUNCH: negative/zero "
          "EINVAL first, then the mode, then EFBIG when offset+len passes s_maxbytes or "
          "overflows, then guest_memfd's alignment EINVAL, allocation past i_size EINVAL, "
          "PUNCH_HOLE at or past EOF 0")
def gmem_fops_fallocate_ranges(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        for mode, name in ((0, "0"), (KEEP, "KEEP"), (KEEP | PUNCH, "KEEP|PUNCH"),
                           (ZERO, "ZERO"), (PUNCH, "PUNCH")):
            if flags and mode not in (KEEP, KEEP | PUNCH):
                continue  # (the mode checks do not look at the flags: once is enough)
            for off, ln in FALLOC_RANGES:
                rec.call(f"{tag} {name} off {off:#x} len {ln:#x}", sys.fallocate, g, mode, off, ln)
        rec.call(f"{tag} fstat", sys.fstat, g)


@scenario("gmem_fops_fallocate_contents",
          "MMAP|INIT_SHARED: KEEP_SIZE keeps existing data; PUNCH_HOLE zeroes exactly the "
          "punched pages seen through a mapping, also a punch straddling EOF; a punch past "
          "EOF changes nothing; the pages fault back in zeroed and writable")
def gmem_fops_fallocate_contents(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        if not _shared_mapping(flags):
            continue
        m = rec.call(f"{tag} mmap", sys.mmap, g, SIZE, PROT_RW, MAP_SHARED)
        if m is None:
            continue
        for i in range(4):
            rec.access(f"{tag} fill page {i}", m, slice(i * P, (i + 1) * P), bytes([0x10 + i]) * P)
        rec.call(f"{tag} KEEP 0..4P", sys.fallocate, g, KEEP, 0, SIZE)
        rec.access(f"{tag} all kept", m, slice(0, SIZE))
        rec.call(f"{tag} punch P..2P", sys.fallocate, g, KEEP | PUNCH, P, P)
        rec.access(f"{tag} page 1 zero, others kept", m, slice(0, SIZE))
        rec.call(f"{tag} punch 3P..5P (straddles EOF)", sys.fallocate, g, KEEP | PUNCH, 3 * P, 2 * P)
        rec.access(f"{tag} page 3 zero", m, slice(0, SIZE))
        rec.call(f"{tag} punch 4P..8P (past EOF)", sys.fallocate, g, KEEP | PUNCH, SIZE, SIZE)
        rec.access(f"{tag} unchanged", m, slice(0, SIZE))
        rec.access(f"{tag} rewrite page 1", m, slice(P, 2 * P), b"\x99" * P)
        rec.access(f"{tag} page 1 rewritten", m, slice(0, SIZE))


PROTS = ((PROT_NONE, "NONE"), (PROT_READ, "R"), (PROT_WRITE, "W"), (PROT_RW, "RW"),
         (PROT_EXEC, "X"), (PROT_READ | PROT_EXEC, "RX"), (PROT_RW | PROT_EXEC, "RWX"),
         (PROT_RW | 0x10, "RW|0x10"))


@scenario("gmem_fops_mmap_prot",
          "mmap prot: any prot with PROT_EXEC EPERM (path_noexec: anon_inode_fs is "
          "SB_I_NOEXEC) before the file's ->mmap (so also for a gmem without MMAP); NONE, "
          "R, W, RW and unknown bits map; a read-only mapping refuses writes")
def gmem_fops_mmap_prot(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        for prot, name in PROTS:
            m = rec.call(f"{tag} mmap prot {name}", sys.mmap, g, SIZE, prot, MAP_SHARED)
            if m is None:
                continue
            if prot & PROT_READ:
                rec.access(f"{tag} prot {name}: read [0:8]", m, slice(0, 8))
            if prot == PROT_WRITE:
                # (a read is left out: HostMapping reads with process_vm_readv, whose GUP
                # refuses a VMA without VM_READ, where C code would read: no write-only PTE)
                rec.access(f"{tag} prot W: write [0:4]", m, slice(0, 4), b"wxyz")
            if prot == PROT_READ:
                rec.access(f"{tag} prot R: write [0]", m, 0, 1)
            rec.call(f"{tag} munmap prot {name}", m.close)


MAP_FLAGS = (
    (MAP_SHARED, "SHARED"), (MAP_SHARED_VALIDATE, "SHARED_VALIDATE"),
    (MAP_SHARED | MAP_SYNC, "SHARED|SYNC"), (MAP_SHARED_VALIDATE | MAP_SYNC, "VALIDATE|SYNC"),
    (MAP_SHARED | MAP_UNKNOWN, "SHARED|0x200000"),
    (MAP_SHARED_VALIDATE | MAP_UNKNOWN, "VALIDATE|0x200000"),
    (MAP_PRIVATE, "PRIVATE"), (MAP_DROPPABLE, "DROPPABLE"), (0, "type 0"), (0x04, "type 4"),
    (0x0F, "type 0xf"), (MAP_SHARED | MAP_HUGETLB, "SHARED|HUGETLB"),
    (MAP_SHARED | MAP_GROWSDOWN, "SHARED|GROWSDOWN"),
    (MAP_SHARED | MAP_POPULATE, "SHARED|POPULATE"), (MAP_SHARED | MAP_LOCKED, "SHARED|LOCKED"),
    (MAP_SHARED | MAP_NORESERVE, "SHARED|NORESERVE"),
    (MAP_SHARED_VALIDATE | MAP_POPULATE | MAP_LOCKED, "VALIDATE|POPULATE|LOCKED"),
    (MAP_SHARED_VALIDATE | MAP_ABOVE4G, "VALIDATE|ABOVE4G"),
    (MAP_SHARED_VALIDATE | MAP_32BIT | MAP_NORESERVE, "VALIDATE|32BIT|NORESERVE"),
    (MAP_SHARED_VALIDATE | MAP_HUGE_2MB, "VALIDATE|HUGE_2MB (no HUGETLB)"),
)


@scenario("gmem_fops_mmap_flags",
          "mmap flags in do_mmap's order: MAP_HUGETLB on a non-hugetlbfs file EINVAL "
          "(ksys_mmap_pgoff), unknown type EINVAL, MAP_SHARED_VALIDATE with MAP_SYNC or an "
          "unknown bit EOPNOTSUPP (no FOP_MMAP_SYNC) while MAP_SHARED ignores them, "
          "MAP_GROWSDOWN EINVAL, then kvm_gmem_mmap (no MMAP: ENODEV; not shared: EINVAL); "
          "POPULATE/LOCKED of pages that SIGBUS still map")
def gmem_fops_mmap_flags(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        for mflags, name in MAP_FLAGS:
            m = rec.call(f"{tag} mmap {name}", sys.mmap, g, SIZE, PROT_RW, mflags)
            if m is None:
                continue
            rec.access(f"{tag} {name}: read [0:8]", m, slice(0, 8))
            rec.call(f"{tag} munmap {name}", m.close)


MMAP_RANGES = (
    (SIZE, 100, "offset 100"), (SIZE, P + 1, "offset P+1"), (SIZE, -1, "offset -1"),
    (0, 0, "length 0"), (1, 0, "length 1"), (P + 1, 0, "length P+1"),
    (SIZE, SIZE, "offset = size"), (P, 2**62, "offset 2^62"),
    (P, 2**63 - 2 * P, "offset 2^63-2P"), (P, 2**63 - P, "offset 2^63-P"),
    (2 * P, 2**63 - 2 * P, "length 2P at 2^63-2P"), (P, -P, "offset -P"),
    (1 << 47, 0, "length 2^47"), (2**64 - P, 0, "length 2^64-P"), (2**64 - 1, 0, "length 2^64-1"),
    (1 << 47, 2**63 - P, "length 2^47 at 2^63-P (ENOMEM before EOVERFLOW)"),
    (0, 100, "length 0 at offset 100 (alignment first)"),
)


@scenario("gmem_fops_mmap_ranges",
          "mmap length/offset: unaligned offset EINVAL first (sys_mmap), length 0 EINVAL, a "
          "length that rounds to 0 or exceeds the address space ENOMEM, then file_mmap_ok's "
          "EOVERFLOW (S_IFREG: offset+length past MAX_LFS_FILESIZE), then the file; a mapping "
          "at or past EOF maps and SIGBUSes")
def gmem_fops_mmap_ranges(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        for length, offset, name in MMAP_RANGES:
            m = rec.call(f"{tag} mmap {name}", sys.mmap, g, length, PROT_RW, MAP_SHARED, offset)
            if m is None:
                continue
            rec.access(f"{tag} {name}: read [0]", m, 0)
            rec.access(f"{tag} {name}: write [len-1]", m, len(m) - 1, 1)
            rec.call(f"{tag} munmap {name}", m.close)


@scenario("gmem_fops_mmap_anonymous",
          "MAP_ANONYMOUS with a guest_memfd fd: ksys_mmap_pgoff never looks at the fd, so "
          "the mapping is anonymous memory (PROT_EXEC allowed, any flags of the gmem), "
          "unrelated to the file's pages")
def gmem_fops_mmap_anonymous(sys, rec):
    for tag, flags, g in _gmems(sys, rec):
        a = rec.call(f"{tag} mmap SHARED|ANONYMOUS", sys.mmap, g, P, PROT_RW,
                     MAP_SHARED | MAP_ANONYMOUS)
        if a is not None:
            rec.access(f"{tag} anonymous: write 0x42", a, slice(0, P), b"\x42" * P)
            rec.access(f"{tag} anonymous: read", a, slice(0, P))
        x = rec.call(f"{tag} mmap PRIVATE|ANONYMOUS RWX", sys.mmap, g, P, PROT_RW | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS)
        if x is not None:
            rec.access(f"{tag} anonymous private: read [0]", x, 0)
        if _shared_mapping(flags):
            m = rec.call(f"{tag} mmap the file", sys.mmap, g, P, PROT_RW, MAP_SHARED)
            if m is not None:
                rec.access(f"{tag} the file's page is still zero", m, slice(0, P))


@scenario("gmem_fops_mmap_other_files",
          "the do_mmap checks the guest_memfd path shares, on /dev/kvm (a character device: "
          "not noexec, no ->mmap), a VM fd (anon inode, no ->mmap: EPERM for PROT_EXEC, "
          "ENODEV before the MAP_GROWSDOWN check) and a vCPU fd (anon inode with ->mmap)")
def gmem_fops_mmap_other_files(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    vcpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    for name, fd in (("/dev/kvm", kvm), ("VM", vm), ("vCPU", vcpu)):
        if fd is None:
            continue
        for prot, mflags, what in (
                (PROT_RW, MAP_SHARED, "RW SHARED"), (PROT_RW | PROT_EXEC, MAP_SHARED, "RWX"),
                (PROT_RW, MAP_SHARED_VALIDATE | MAP_SYNC, "VALIDATE|SYNC"),
                (PROT_RW, MAP_SHARED_VALIDATE | MAP_UNKNOWN, "VALIDATE|0x200000"),
                (PROT_RW, MAP_SHARED | MAP_GROWSDOWN, "GROWSDOWN"),
                (PROT_RW, MAP_SHARED | MAP_HUGETLB, "HUGETLB"), (PROT_RW, MAP_PRIVATE, "PRIVATE"),
                (PROT_RW, 0x04, "type 4")):
            m = rec.call(f"{name}: mmap P {what}", sys.mmap, fd, P, prot, mflags)
            if m is not None:
                rec.call(f"{name}: munmap {what}", m.close)
        rec.call(f"{name}: mmap P offset -P", sys.mmap, fd, P, PROT_RW, MAP_SHARED, -P)
        a = rec.call(f"{name}: mmap P SHARED|ANONYMOUS", sys.mmap, fd, P, PROT_RW,
                     MAP_SHARED | MAP_ANONYMOUS)
        if a is not None:
            rec.access(f"{name}: anonymous: write and read", a, slice(0, 2), b"ok")
            rec.access(f"{name}: anonymous: read", a, slice(0, 2))


def _times(st):
    return st.st_atime, st.st_mtime, st.st_ctime


@scenario("gmem_fops_stat_identity",
          "fstat identity and times as properties: a guest_memfd lives on the anon_inode "
          "mount (st_dev of a VM fd) with its own inode (get_next_ino: never reused), owned "
          "by the caller (alloc_anon_inode: current_fsuid/fsgid); VM and vCPU fds share the "
          "one anon inode; times start at creation; a successful fallocate updates mtime and "
          "ctime (kvm_gmem_fallocate -> file_modified), so does the first write fault "
          "through a mapping (fault_dirty_shared_page: no ->page_mkwrite), a failed call "
          "does not")
def gmem_fops_stat_identity(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    vm2 = create_vm(sys, rec, kvm, label="second VM")
    vcpu = rec.call("KVM_CREATE_VCPU 0", sys.ioctl, vm, K.KVM_CREATE_VCPU, 0)
    if None in (vm, vm2, vcpu):
        return
    svm, svm2, svcpu = sys.fstat(vm), sys.fstat(vm2), sys.fstat(vcpu)
    key = lambda st: (st.st_dev, st.st_ino)
    rec.record("VM, second VM and vCPU fds: one inode", key(svm) == key(svm2) == key(svcpu))
    t0 = time.time()
    g = create_gmem(sys, rec, vm, SIZE, MMAP | INIT_SHARED)
    g2 = create_gmem(sys, rec, vm, SIZE, 0)
    t1 = time.time()
    if None in (g, g2):
        return
    st, st2 = sys.fstat(g), sys.fstat(g2)
    rec.record("gmem st_dev is the anon_inode mount's (a VM fd's)", st.st_dev == svm.st_dev)
    rec.record("two gmems: two inodes, neither the VM fd's",
               len({st.st_ino, st2.st_ino, svm.st_ino}) == 3)
    rec.record("gmem owner is the caller", (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()))
    rec.record("gmem nlink 1, rdev 0", (st.st_nlink, st.st_rdev))
    rec.record("gmem times are its creation time",
               all(t0 - 1 <= t <= t1 + 1 for t in _times(st)))
    rec.close("close the second gmem", g2)
    g3 = create_gmem(sys, rec, vm, SIZE, 0, label="a gmem after the close")
    if g3 is not None:
        rec.record("its inode is new", sys.fstat(g3).st_ino not in (st.st_ino, st2.st_ino))
    before = _times(sys.fstat(g))
    time.sleep(0.05)  # (current_time is coarse: a few ms)
    rec.call("fallocate KEEP off 1 (EINVAL)", sys.fallocate, g, KEEP, 1, P)
    rec.call("fallocate KEEP past EOF (EINVAL)", sys.fallocate, g, KEEP, SIZE, P)
    rec.call("ftruncate (EINVAL)", sys.ftruncate, g, SIZE)
    rec.record("failed calls keep the times", _times(sys.fstat(g)) == before)
    m = rec.call("mmap", sys.mmap, g, SIZE, PROT_RW, MAP_SHARED)
    if m is not None:
        rec.access("read through the mapping", m, slice(0, P))
        rec.record("a read fault keeps the times", _times(sys.fstat(g)) == before)
        rec.access("write through the mapping", m, slice(0, P), b"\x01" * P)
        mapped = _times(sys.fstat(g))
        rec.record("a write after the read fault (no fault): atime kept, mtime == ctime, later",
                   (mapped[0] == before[0], mapped[1] == mapped[2], mapped[1] > before[1]))
        before = mapped
        time.sleep(0.05)
        rec.access("write the same page again", m, slice(0, P), b"\x02" * P)
        rec.record("a write to a page already writable keeps the times",
                   _times(sys.fstat(g)) == before)
    time.sleep(0.05)
    rec.call("fallocate KEEP 0..P", sys.fallocate, g, KEEP, 0, P)
    after = _times(sys.fstat(g))
    rec.record("fallocate: atime kept, mtime == ctime, later",
               (after[0] == before[0], after[1] == after[2], after[1] > before[1]))
    time.sleep(0.05)
    rec.call("punch 0..P", sys.fallocate, g, KEEP | PUNCH, 0, P)
    punched = _times(sys.fstat(g))
    rec.record("punch: mtime == ctime, later", (punched[1] == punched[2], punched[1] > after[1]))
    if m is not None:
        time.sleep(0.05)
        rec.access("write the punched page (its PTE was zapped)", m, slice(0, 8), b"\x03" * 8)
        refault = _times(sys.fstat(g))
        rec.record("the write faults again: later", refault[1] > punched[1])
        time.sleep(0.05)
        rec.access("write pages 0..2 (page 2 not mapped yet)", m, slice(0, 3 * P), b"\x04" * 3 * P)
        rec.record("a write that faults one page: later", _times(sys.fstat(g))[1] > refault[1])
        punched = _times(sys.fstat(g))
    time.sleep(0.05)
    rec.call("punch past EOF", sys.fallocate, g, KEEP | PUNCH, 8 * SIZE, P)
    rec.record("a punch past EOF succeeds and updates mtime too",
               _times(sys.fstat(g))[1] > punched[1])


@scenario("gmem_fops_mmap_populate",
          "MAP_POPULATE / MAP_LOCKED fault the pages in at mmap (__mm_populate, read faults "
          "on a shared mapping: no mtime change), so later writes take no fault and keep the "
          "times; MAP_POPULATE|MAP_NONBLOCK does not populate; on a gmem without "
          "INIT_SHARED populate stops at the first SIGBUS and mmap still succeeds")
def gmem_fops_mmap_populate(sys, rec):
    kvm = open_kvm(sys, rec)
    vm = create_vm(sys, rec, kvm)
    for mflags, name, populates in ((MAP_SHARED | MAP_POPULATE, "POPULATE", True),
                                    (MAP_SHARED | MAP_LOCKED, "LOCKED", True),
                                    (MAP_SHARED | MAP_POPULATE | MAP_NONBLOCK, "POPULATE|NONBLOCK",
                                     False),
                                    (MAP_SHARED, "plain", False)):
        g = create_gmem(sys, rec, vm, SIZE, MMAP | INIT_SHARED, label=f"{name}: create")
        if g is None:
            continue
        before = _times(sys.fstat(g))
        time.sleep(0.05)
        m = rec.call(f"{name}: mmap", sys.mmap, g, SIZE, PROT_RW, mflags)
        rec.record(f"{name}: mmap keeps the times", _times(sys.fstat(g)) == before)
        if m is None:
            continue
        rec.access(f"{name}: write all", m, slice(0, SIZE), b"\x05" * SIZE)
        rec.record(f"{name}: the write took a fault (mtime later)",
                   _times(sys.fstat(g))[1] > before[1])
    g = create_gmem(sys, rec, vm, SIZE, MMAP, label="MMAP only: create")
    if g is not None:
        m = rec.call("MMAP only: mmap POPULATE", sys.mmap, g, SIZE, PROT_RW, MAP_SHARED | MAP_POPULATE)
        if m is not None:
            rec.access("MMAP only: read", m, 0)


@scenario("gmem_fops_mapping_access",
          "the mapping object as mmap.mmap: extended slices read the span and write byte by "
          "byte (SIGBUS at the first byte past EOF), negative indexes, wrong sizes "
          "IndexError, len() and access after close ValueError")
def gmem_fops_mapping_access(sys, rec):
    for tag, flags, g in _gmems(sys, rec, P):
        if not flags & MMAP:
            continue
        m = rec.call(f"{tag} mmap 2P of a P file", sys.mmap, g, 2 * P, PROT_RW, MAP_SHARED)
        if m is None:
            continue
        rec.access(f"{tag} m[0:16:4] = abcd", m, slice(0, 16, 4), b"abcd")
        rec.access(f"{tag} m[0:16]", m, slice(0, 16))
        rec.access(f"{tag} m[12::-4]", m, slice(12, None, -4))
        rec.access(f"{tag} m[P-8:P+8:4] (crosses EOF)", m, slice(P - 8, P + 8, 4))
        rec.access(f"{tag} m[P-8:P+8:4] = 4 bytes (crosses EOF)", m, slice(P - 8, P + 8, 4), b"wxyz")
        rec.access(f"{tag} m[P-8:P]", m, slice(P - 8, P))
        rec.access(f"{tag} m[0:16:4] = 3 bytes", m, slice(0, 16, 4), b"abc")
        rec.access(f"{tag} m[0:2] = 3 bytes", m, slice(0, 2), b"abc")
        rec.access(f"{tag} m[-1] (past EOF)", m, -1)
        rec.access(f"{tag} m[-(P+1)]", m, -(P + 1))
        rec.access(f"{tag} m[2P]", m, 2 * P)
        rec.access(f"{tag} m[2P:3P] (empty)", m, slice(2 * P, 3 * P))
        rec.call(f"{tag} munmap", m.close)
        try:
            rec.record(f"{tag} len after close", len(m))
        except ValueError:
            rec.outcome(f"{tag} len after close", ("exc", "ValueError"))
        rec.access(f"{tag} m[0] after close", m, 0)
        rec.call(f"{tag} munmap again", m.close)
