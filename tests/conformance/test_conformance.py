"""Conformance: every scenario on the real kernel and on kmock.Kernel(profile="host").

``test_mock_matches_host[...]`` is the proof a VMM developer relies on: the recorded
steps (normalized outcomes) of the mock must equal those of the real kernel.
``test_host_agrees_with_reference[...]`` pins the scenarios to the reference
(kvm-guest-memfd-6.18.md): the real kernel must give the documented key outcomes, so a
scenario can never pass vacuously (e.g. by failing the same setup step on both sides).
"""

import os

import pytest

import kmock
from kmock.testing.conformance import (
    SCENARIOS,
    compare,
    in_child,
    kvm_available,
    outcome_of,
    run_scenario,
)
from kmock.uapi import kvm as K

SKIP_REASON = "no /dev/kvm on this machine: conformance against the real kernel skipped"

pytestmark = [
    pytest.mark.conformance,
    pytest.mark.skipif(not kvm_available(), reason=SKIP_REASON),
]

P = 4096
# The reference was probed on these kernels (builds 6.18.44-fc-v657 and -v973 checked);
# host-specific rows are checked only there.
PROBE_HOST_RELEASE = "6.18.44-fc-"
RELEASE = os.uname().release

E = lambda name: ("errno", name)  # noqa: E731
OK = ("ok", None)
ENOTSUP = ("errno", "ENOTSUP")  # EOPNOTSUPP == ENOTSUP == 95; Python names it ENOTSUP


def _diff_text(name, host, mock):
    diffs = compare(host, mock)
    lines = [f"scenario {name}: {len(diffs)} step(s) differ between the real kernel and the mock"]
    lines += ["  " + d for d in diffs[:40]]
    if len(diffs) > 40:
        lines.append(f"  ... {len(diffs) - 40} more")
    return "\n".join(lines)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_mock_matches_host(name):
    with kmock.HostKernel() as h:
        host = run_scenario(name, h)
    with kmock.Kernel(profile="host") as m:
        mock = run_scenario(name, m)
    assert not compare(host, mock), _diff_text(name, host, mock)


# --- the host against the reference ---------------------------------------------------------

REFERENCE = {
    "probe_01_create_gmem_bad_sizes": [
        ("KVM_CREATE_GUEST_MEMFD size=0x0 flags=0x0", E("EINVAL")),
        ("KVM_CREATE_GUEST_MEMFD size=0x1 flags=0x0", E("EINVAL")),
        ("KVM_CREATE_GUEST_MEMFD size=0xfff flags=0x0", E("EINVAL")),
        ("KVM_CREATE_GUEST_MEMFD size=0x1001 flags=0x0", E("EINVAL")),
    ],
    "probe_02_create_gmem_negative_sizes": [
        ("KVM_CREATE_GUEST_MEMFD size=0x8000000000000000 flags=0x0", E("EINVAL")),
        ("KVM_CREATE_GUEST_MEMFD size=0xfffffffffffff000 flags=0x0", E("EINVAL")),
    ],
    "probe_03_create_gmem_huge_sizes": [
        ("fstat gmem size 0x7ffffffffffff000", ("ok", ("stat", 0o100600, 0x7FFFFFFFFFFFF000, P, 0, 1))),
        ("fstat gmem size 0x4000000000000000", ("ok", ("stat", 0o100600, 2**62, P, 0, 1))),
        ("fstat gmem size 0x10000000000", ("ok", ("stat", 0o100600, 2**40, P, 0, 1))),
    ],
    "probe_04_create_gmem_flag_bits": [("flags=1<<0", ("ok", "fd3")), ("flags=1<<1", ("ok", "fd4"))]
    + [(f"flags=1<<{b}", E("EINVAL")) for b in range(2, 64)],
    "probe_05_create_gmem_init_shared_without_mmap": [
        ("KVM_CREATE_GUEST_MEMFD size=0x4000 flags=0x2", ("ok", "fd3")),
    ],
    "probe_06_create_gmem_reserved_unchecked": [
        ("reserved[0]=1", ("ok", "fd3")),
        ("reserved[5]=~0", ("ok", "fd4")),
    ],
    "probe_07_null_argument": [
        ("KVM_CREATE_GUEST_MEMFD(NULL)", E("EFAULT")),
        ("KVM_SET_USER_MEMORY_REGION2(NULL)", E("EFAULT")),
    ],
    "probe_08_create_gmem_on_dev_kvm": [("KVM_CREATE_GUEST_MEMFD on /dev/kvm", E("EINVAL"))],
    "probe_09_eio_from_forked_child": [
        ("child: KVM_CREATE_GUEST_MEMFD on the VM fd", E("EIO")),
        ("child: KVM_CHECK_EXTENSION(GUEST_MEMFD) on the VM fd", E("EIO")),
        ("child: KVM_SET_USER_MEMORY_REGION2 on the VM fd", E("EIO")),
        ("child: KVM_GET_API_VERSION on /dev/kvm", ("ok", 12)),
        ("child: fallocate KEEP_SIZE 0..4P on gmem", OK),
    ],
    "probe_10_fallocate_mode0": [("fallocate mode 0, 0..4P", ENOTSUP)],
    "probe_11_fallocate_punch_without_keep_size": [("fallocate PUNCH_HOLE 0..P", ENOTSUP)],
    "probe_12_fallocate_punch_unaligned": [
        ("punch off=P-1 len=P", E("EINVAL")),
        ("punch off=P len=P-1", E("EINVAL")),
    ],
    "probe_13_fallocate_past_eof": [
        ("KEEP_SIZE 0..T+P", E("EINVAL")),
        ("KEEP_SIZE off=T len=P", E("EINVAL")),
        ("KEEP_SIZE off=T+P len=P", E("EINVAL")),
        ("KEEP_SIZE 0..T", OK),
    ],
    "probe_14_fallocate_punch_at_or_after_eof": [
        ("punch off=T len=P", OK),
        ("punch off=T+P len=P", OK),
    ],
    "probe_15_fallocate_efbig": [("KEEP_SIZE off=2^62 len=2^62", E("EFBIG"))],
    "probe_16_mmap_without_mmap_flag": [
        ("flags 0: mmap MAP_SHARED RW", E("ENODEV")),
        ("flags 0: mmap MAP_SHARED R", E("ENODEV")),
        ("flags 0: mmap MAP_PRIVATE RW", E("ENODEV")),
        ("INIT_SHARED only: mmap MAP_SHARED RW", E("ENODEV")),
    ],
    "probe_17_mmap_private": [
        ("flags 0x1: mmap MAP_PRIVATE RW", E("EINVAL")),
        ("flags 0x3: mmap MAP_PRIVATE RW", E("EINVAL")),
    ],
    "probe_18_sigbus_private": [
        ("mmap 4P MAP_SHARED RW", ("ok", ("mapping", 4 * P))),
        ("read m[0]", ("sigbus", 0)),
        ("write m[0]=0xaa", ("sigbus", 0)),
        ("read m[0] after fallocate", ("sigbus", 0)),
    ],
    "probe_19_sigbus_beyond_eof": [
        ("read size-1", ("ok", 0)),
        ("read size", ("sigbus", P)),
        ("read 4*size-1", ("sigbus", 4 * P - 1)),
        ("mmap P at file offset = size", ("ok", ("mapping", P))),
        ("read m2[0]", ("sigbus", 0)),
        ("mmap at unaligned file offset 100", E("EINVAL")),
    ],
    "probe_20_read_write": [
        ("read 64", E("EINVAL")),
        ("read 0", E("EINVAL")),
        ("write 64", E("EINVAL")),
    ],
    "probe_21_pread_pwrite_lseek": [
        ("pread 64 @0", E("ESPIPE")),
        ("pwrite 64 @0", E("ESPIPE")),
    ]
    + [(f"lseek 0 SEEK_{n}", E("ESPIPE")) for n in ("SET", "CUR", "END", "DATA", "HOLE")],
    "probe_22_ftruncate_fchmod_fsync": [
        ("ftruncate 0x4000", E("EINVAL")),
        ("ftruncate 0x8000", E("EINVAL")),
        ("fchmod 0o644", E("EINVAL")),
        ("fsync", E("EINVAL")),
        ("fstat (size unchanged)", ("ok", ("stat", 0o100600, 4 * P, P, 0, 1))),
    ],
    "probe_23_ioctl_on_gmem": [
        ("KVM_GET_API_VERSION on gmem", E("ENOTTY")),
        ("KVM_CREATE_GUEST_MEMFD on gmem", E("ENOTTY")),
    ],
    "probe_24_bind_same_range_twice": [
        ("slot 1 gpa 0 [0,4P)", ("ok", 0)),
        ("slot 2 gpa 1G [0,4P)", E("EINVAL")),
    ],
    "probe_25_bind_partial_overlap": [
        ("slot 2 [2P,6P)", E("EINVAL")),
        ("slot 2 [3P,5P) (last page overlaps)", E("EINVAL")),
        ("slot 2 [4P,8P) (adjacent)", ("ok", 0)),
    ],
    "probe_26_bind_misaligned_offset": [("offset 1", E("EINVAL")), ("offset 2048", E("EINVAL"))],
    "probe_27_bind_gpa_overlap": [
        ("slot 2 gpa 0x101000 [4P,6P) (gpa overlap)", E("EEXIST")),
        ("slot 2 gpa 0x101000 [0,2P) (gpa and gmem overlap)", E("EEXIST")),
    ],
    "probe_28_bind_non_gmem_fd": [
        ("guest_memfd=/dev/null", E("EINVAL")),
        ("guest_memfd=VM fd", E("EINVAL")),
        ("guest_memfd=/dev/kvm fd", E("EINVAL")),
        ("guest_memfd=regular file", E("EINVAL")),
    ],
    "probe_29_bind_bad_fd": [("guest_memfd=9999", E("EBADF")), ("guest_memfd=0xffffffff", E("EBADF"))],
    "probe_30_bind_other_vms_gmem": [
        ("bind VM A's gmem into VM B", E("EINVAL")),
        ("bind VM A's gmem into VM B after VM A closed", E("EINVAL")),
    ],
    "probe_31_bind_beyond_file": [
        ("offset 3P size 2P", E("EINVAL")),
        ("offset == size (4P), size P", E("EINVAL")),
        ("offset 2^62", E("EINVAL")),
        ("offset 2^64-P (u64 overflow)", E("EINVAL")),
        ("offset 2^63 (negative loff_t)", E("EINVAL")),
    ],
    "probe_32_bind_loff_overflow_bug": [("offset 0x7ffffffffffff000 size P", ("ok", 0))],
    "probe_33_gmem_flag_combinations": [
        ("GUEST_MEMFD|READONLY", E("EINVAL")),
        ("GUEST_MEMFD|LOG_DIRTY_PAGES", E("EINVAL")),
    ],
    "probe_34_v1_with_gmem_flag": [("v1 flags=GUEST_MEMFD", E("EINVAL"))],
    "probe_35_gmem_slot_immutable": [
        ("identical parameters", E("EINVAL")),
        ("move to gpa 1G", E("EINVAL")),
        ("drop GUEST_MEMFD flag", E("EINVAL")),
    ],
    "probe_36_padding_unchecked": [("pad1=1", ("ok", 0)), ("pad2[0]=~0", ("ok", 0))],
    "probe_38_set_memory_attributes_dev_kvm": [("attrs=PRIVATE on /dev/kvm", E("EINVAL"))],
    "probe_40_memory_encrypt_op": [("KVM_MEMORY_ENCRYPT_OP(NULL)", E("ENOTTY"))],
    "probe_42_enable_cap_exit_hypercall": [
        ("EXIT_HYPERCALL args[0]=1<<12", ("ok", 0)),
        ("EXIT_HYPERCALL args[0]=1<<11", E("EINVAL")),
        ("GUEST_MEMFD_FLAGS args[0]=1", E("EINVAL")),
    ],
    "probe_43_check_extension": [
        (f"KVM_CHECK_EXTENSION({c}) on {w}", ("ok", v))
        for c, v in zip((231, 232, 233, 234, 235, 236, 244, 201), (1, 1, 0, 1, 1, 0, 3, 4096))
        for w in ("/dev/kvm", "VM")
    ],
    "fact_dev_kvm_basics": [
        ("KVM_GET_API_VERSION", ("ok", 12)),
        ("KVM_GET_VCPU_MMAP_SIZE", ("ok", 12288)),
        ("KVM_CHECK_EXTENSION(10) on VM", ("ok", 32764)),
        ("unknown ioctl _IO(0xAE,0xff) on VM", E("ENOTTY")),
        ("CREATE_GUEST_MEMFD with wrong size _IOWR(0xAE,0xd4,32)", E("ENOTTY")),
        ("SET_USER_MEMORY_REGION2 with wrong size _IOW(0xAE,0x49,32)", E("ENOTTY")),
    ],
    "fact_gmem_fstat": [
        ("fstat flags 0x0", ("ok", ("stat", 0o100600, 4 * P, P, 0, 1))),
        ("fstat after fallocate flags 0x1", ("ok", ("stat", 0o100600, 4 * P, P, 0, 1))),
        ("fstat after faulting through mmap", ("ok", ("stat", 0o100600, 4 * P, P, 0, 1))),
        ("all inodes distinct", ("ok", True)),
        ("dup has the same inode", ("ok", True)),
    ],
    "fact_dup_gmem_binding": [
        ("bind [0,4P) via dup", ("ok", 0)),
        ("bind [2P,6P) via original (overlap)", E("EINVAL")),
        ("rebind [0,4P) via dup after delete", ("ok", 0)),
    ],
    "fact_gmem_after_vm_close": [
        ("fallocate KEEP_SIZE 0..4P", OK),
        ("read all through the old mapping", ("ok", ("bytes", 4 * P, ((0, 4 * P, 0xAA),)))),
        ("punch [P,2P)", OK),
        ("new mmap 4P", ("ok", ("mapping", 4 * P))),
        ("read all through the new mapping",
         ("ok", ("bytes", 4 * P, ((0, P, 0xAA), (P, 2 * P, 0), (2 * P, 4 * P, 0xAA))))),
        ("bind the orphaned gmem to the other VM", E("EINVAL")),
    ],
    "fact_data_persistence": [
        (f"contents as written {when}", ("ok", True))
        for when in ("after memslot deletion", "after munmap/mmap", "after re-allocate", "after VM close",
                     "through a new mapping after VM close")
    ] + [("access after munmap", ("exc", "ValueError"))],
    "fact_punch_and_allocate_while_bound": [
        ("fallocate KEEP_SIZE over the bound range", OK),
        ("punch [2P,6P) across the bound range", OK),
        ("read all", ("ok", ("bytes", 8 * P, ((0, 2 * P, 0x5A), (2 * P, 6 * P, 0), (6 * P, 8 * P, 0x5A))))),
        ("bind slot 2 [0,P) (still bound by slot 1)", E("EINVAL")),
        ("bind slot 2 [4P,8P)", ("ok", 0)),
    ],
    "fact_mapping_outlives_fd": [
        ("read all through the mapping", ("ok", ("bytes", 4 * P, ((0, 2 * P, 0), (2 * P, 3 * P, 0x66), (3 * P, 4 * P, 0))))),
        ("read back", ("ok", b"live")),
        ("fallocate on the closed fd", E("EBADF")),
        ("delete slot 1", ("ok", 0)),
    ],
    "fact_fork_shared_mapping": [
        ("child: read, write, private read, punch",
         ("ok", (("ok", b"\x10" * 8), ("ok", None), ("sigbus", 0), ("ok", None)))),
        ("parent reads page 1 (written by the child)", ("ok", b"fromkid!")),
    ],
    "fact_delete_after_gmem_close": [("delete slot 1", ("ok", 0))],
    "fact_unbind_frees_range": [("bind slot 2 [0,4P) after delete", ("ok", 0))],
    "fact_two_mappings_share": [("read m1[2P+10]", ("ok", 0x42))],
    "fact_punch_zeroes_mapping": [
        ("read all", ("ok", ("bytes", 4 * P, ((0, P, 0xAA), (P, 2 * P, 0), (2 * P, 4 * P, 0xAA))))),
        ("read() while mapped", E("EINVAL")),
    ],
    "fact_fallocate_modes": [
        ("KEEP_SIZE len=0", E("EINVAL")),
        ("KEEP_SIZE off=-P", E("EINVAL")),
        ("mode ZERO_RANGE 0..P", ENOTSUP),
        ("mode COLLAPSE 0..P", ENOTSUP),
        ("mode WRITE_ZEROES 0..P", ENOTSUP),
        ("mode KEEP|PUNCH|ZERO 0..P", ENOTSUP),
    ],
    "fact_mmap_variants": [
        ("mmap PROT_READ MAP_SHARED", ("ok", ("mapping", 4 * P))),
        ("mmap MAP_SHARED_VALIDATE", ("ok", ("mapping", 4 * P))),
        ("mmap MAP_SHARED|MAP_POPULATE", ("ok", ("mapping", 4 * P))),
    ],
    "fact_memslot_rules": [
        ("slot 32764 -> EINVAL", E("EINVAL")),
        ("slot 32763", ("ok", 0)),
        ("flags 1<<16", E("EINVAL")),
        ("uaddr 0xffff800000000000", E("EINVAL")),
        ("plain LOG_DIRTY|READONLY", ("ok", 0)),
        ("plain flags 0 with garbage guest_memfd/offset", ("ok", 0)),
        ("plain slot 3 add GUEST_MEMFD", E("EINVAL")),
        ("delete never-created slot 9", E("EINVAL")),
        ("delete slot 3 twice", E("EINVAL")),
    ],
    "selftest_file_read_write": [("[type 0 flags 0x0] read 64", E("EINVAL"))],
    "selftest_mmap_supported": [
        ("[type 0 flags 0x3] read all after punch",
         ("ok", ("bytes", 4 * P, ((0, P, 0), (P, 4 * P, 0xAA))))),
        ("[type 0 flags 0x3] read all again", ("ok", ("bytes", 4 * P, ((0, 4 * P, 0xAA),)))),
    ],
    "selftest_fault_overflow": [
        ("[type 0 flags 0x3] memset 0xaa whole mapping (expect SIGBUS)", ("sigbus", 4 * P)),
        ("[type 0 flags 0x3] READ_ONCE(mem[0x4000]) (expect SIGBUS)", ("sigbus", 4 * P)),
        ("[type 0 flags 0x3] [0,0x4000) reads 0xaa", ("ok", ("bytes", 4 * P, ((0, 4 * P, 0xAA),)))),
    ],
    "selftest_fault_private": [
        ("[type 0 flags 0x1] memset 0xaa whole mapping (expect SIGBUS)", ("sigbus", 0)),
        ("[type 0 flags 0x1] READ_ONCE(mem[0x0]) (expect SIGBUS)", ("sigbus", 0)),
    ],
    "selftest_mmap_cow": [
        ("[type 0 flags 0x1] mmap 4P MAP_PRIVATE", E("EINVAL")),
        ("[type 0 flags 0x3] mmap 4P MAP_PRIVATE", E("EINVAL")),
    ],
    "selftest_mmap_not_supported": [("[type 0 flags 0x0] mmap 4P MAP_SHARED", E("ENODEV"))],
    "selftest_file_size": [
        (f"[type 0 flags {f:#x}] st_size == 4P, st_blksize == P", ("ok", (True, True))) for f in (0, 1, 3)
    ],
    "selftest_fallocate": [
        (f"[type 0 flags {f:#x}] {lbl}", o)
        for f in (0, 1, 3)
        for lbl, o in (
            ("KEEP_SIZE 0..4P", OK),
            ("KEEP|PUNCH (P-1, P)", E("EINVAL")),
            ("KEEP (4P, P)", E("EINVAL")),
            ("KEEP (5P, P)", E("EINVAL")),
            ("KEEP|PUNCH (4P, P)", OK),
            ("KEEP|PUNCH (5P, P)", OK),
            ("KEEP|PUNCH (P, P-1)", E("EINVAL")),
            ("KEEP|PUNCH (P, P)", OK),
            ("KEEP (P, P)", OK),
        )
    ],
    "selftest_invalid_punch_hole": [
        (f"[type 0 flags {f:#x}] KEEP|PUNCH ({o:#x}, {n:#x})", E("EINVAL"))
        for f in (0, 1, 3)
        for o, n in ((0, 1), (0, P - 1), (0, P + 1), (1, 1), (1, P - 1), (1, P), (1, P + 1),
                     (P, 1), (P, P - 1), (P, P + 1))
    ],
    "selftest_invalid_sizes": [(f"[type 0 flags {f:#x}] all EINVAL", ("ok", True)) for f in (0, 1, 3)],
    "selftest_create_guest_memfd_multiple": [
        ("[type 0 flags 0x0] st_size P, 2P, P", ("ok", (True, True, True))),
        ("[type 0 flags 0x0] st_ino differ", ("ok", True)),
    ],
    "selftest_guest_memfd_flags": [
        (f"[type 0] flag 1<<{b} as the selftest expects", ("ok", True)) for b in range(64)
    ],
    # facts the mock took from kernel source; the reference states these rows, the rest of
    # each scenario is checked against the real kernel only (test_mock_matches_host)
    "fact_dev_ioctl_args": [
        ("KVM_GET_API_VERSION 0", ("ok", 12)),  # §5.2
        ("KVM_GET_VCPU_MMAP_SIZE 0", ("ok", 12288)),  # §1, §5.2
    ],
    "fact_vcpu_ioctls": [
        ("KVM_ENABLE_CAP(GUEST_MEMFD_FLAGS) on VM", E("EINVAL")),  # §4.9
    ],
    # kvm_vcpu_pre_fault_memory's own checks precede the arch code (kvm_main.c), and
    # kvm_arch_vcpu_ioctl_run checks immediate_exit before vcpu_enter_guest loads the MMU
    "fact_pre_fault_mmu_root": [
        ("no memslot: flags=1", E("EINVAL")),
        ("no memslot: size 0", E("EINVAL")),
        ("no memslot: unaligned size", E("EINVAL")),
        ("no memslot: gpa + size wraps", E("EINVAL")),
        ("on the VM fd", E("ENOTTY")),
    ],
    "fact_run_mmu_root": [("KVM_RUN with immediate_exit", E("EINTR"))],
    "fact_kvm_file_ops": [
        # not a reference row: vfs_read without ->read (kvm_vm_fops has none) is EINVAL,
        # the same rule §4.2 gives for guest_memfd; observed on the 6.18.44 probe host
        ("read VM", E("EINVAL")),
    ],
    # the binary stats fds (not reference rows): virt/kvm/kvm_main.c
    # kvm_vm_ioctl_get_stats_fd / kvm_vcpu_ioctl_get_stats_fd, virt/kvm/binary_stats.c
    # kvm_stats_read, the VFS's answers for the calls kvm_*_stats_fops lack (kmock.kvm.stats)
    "fact_stats_vm_fd": [
        ("KVM_GET_STATS_FD on the VM", ("ok", "fd3")),
        ("VM: the header read alone is the file's first 24 bytes", ("ok", True)),
        ("VM: id string is 'kvm-{pid}'", ("ok", True)),
        ("VM: a fresh VM's values are all 0", ("ok", True)),
        ("KVM_GET_STATS_FD with argument 5", ("ok", "fd4")),
        ("_IOR-encoded KVM_GET_STATS_FD on the VM", E("ENOTTY")),
        ("KVM_GET_STATS_FD on /dev/kvm", E("EINVAL")),
        ("KVM_GET_STATS_FD from a forked child", E("EIO")),
        ("pread of the stats fd from a forked child", ("ok", 24)),
    ],
    "fact_stats_vcpu_fd": [
        ("KVM_GET_STATS_FD on the vCPU", ("ok", "fd4")),
        ("vCPU: id string is 'kvm-{pid}/vcpu-3'", ("ok", True)),
        ("vCPU: a fresh vCPU's values are all 0", ("ok", True)),
        ("KVM_GET_STATS_FD on the vCPU from a forked child", E("EIO")),
        ("the vCPU stats fd reads after both are closed", ("ok", True)),
    ],
    "fact_stats_fd_calls": [
        ("lseek 0 SEEK_SET", ("ok", 24)),
        ("lseek -5 SEEK_END", ("ok", 24)),
        ("lseek 0 whence 5", E("EINVAL")),
        ("read 8 (the id string's start)", ("ok", b"kvm")),
        ("lseek 0 SEEK_CUR after the reads", ("ok", 32)),
        ("lseek 0 SEEK_CUR of the original", ("ok", 36)),
        ("pread 100 at size", ("ok", b"")),
        ("pread 10 at -1", E("EINVAL")),
        ("write 1", E("EBADF")),
        ("pwrite 1 at 0", E("ESPIPE")),
        ("ioctl KVM_GET_STATS_FD on the stats fd", E("ENOTTY")),
        ("mmap 1 page", E("ENODEV")),
        ("fallocate 0..P", E("EBADF")),
        ("fallocate length 0", E("EINVAL")),
        ("ftruncate 0", E("EINVAL")),
        ("fsync", E("EINVAL")),
        ("fstat", ("ok", ("stat", 0o600, 0, P, 0, 1))),
    ],
    # x86 VM ioctls beyond guest memory (not reference rows): arch/x86/kvm/x86.c
    # kvm_arch_vm_ioctl, kvm_vm_ioctl_enable_cap, kvm_arch_vcpu_precreate;
    # virt/kvm/kvm_main.c kvm_vm_ioctl_enable_cap_generic (kmock.kvm.x86_vm)
    "x86_vm_boot_cpu_id": [
        ("BOOT_CPU_ID 0 on /dev/kvm", E("EINVAL")),
        ("BOOT_CPU_ID 4097", E("EINVAL")),
        ("BOOT_CPU_ID 4096", ("ok", 0)),  # 'arg > KVM_MAX_VCPU_IDS'
        ("BOOT_CPU_ID 5 (max 4)", E("EINVAL")),
        ("BOOT_CPU_ID 4 (max 4)", ("ok", 0)),
        ("MAX_VCPU_ID 3 (boot 4)", E("EINVAL")),
        ("BOOT_CPU_ID 0 after a vCPU", E("EBUSY")),
        ("BOOT_CPU_ID 4097 after a vCPU", E("EBUSY")),
        ("VM 2: MAX_VCPU_ID 6 (boot 7)", E("EINVAL")),
        ("VM 2: MAX_VCPU_ID 7 (boot 7)", ("ok", 0)),
        ("VM 2: BOOT_CPU_ID 8 (max 7)", E("EINVAL")),
    ],
    "x86_vm_max_vcpu_id": [
        ("MAX_VCPU_ID 4 flags=1", E("EINVAL")),
        ("MAX_VCPU_ID 4097", E("EINVAL")),
        ("MAX_VCPU_ID 0 (leaves it unset)", ("ok", 0)),
        ("MAX_VCPU_ID 2", ("ok", 0)),
        ("MAX_VCPU_ID 2 again", ("ok", 0)),
        ("MAX_VCPU_ID 3", E("EINVAL")),
        ("KVM_CREATE_VCPU 2", E("EINVAL")),
        ("VM 2: KVM_CREATE_VCPU 4096 (before precreate)", E("EINVAL")),
        ("VM 2: MAX_VCPU_ID 100", ("ok", 0)),
        ("VM 2: KVM_CREATE_VCPU 100", E("EINVAL")),
        ("VM 2: KVM_CREATE_VCPU 99 again", E("EEXIST")),
        ("VM 3: MAX_VCPU_ID 4096 after a vCPU", ("ok", 0)),
        ("VM 3: MAX_VCPU_ID 100 after a vCPU", E("EINVAL")),
        ("MAX_VCPU_ID 4 on /dev/kvm", E("EINVAL")),
    ],
    "x86_vm_nr_mmu_pages": [
        ("SET_NR_MMU_PAGES 64 on /dev/kvm", E("EINVAL")),
        ("GET_NR_MMU_PAGES", E("ENOTTY")),
        ("SET_NR_MMU_PAGES 0", E("EINVAL")),
        ("SET_NR_MMU_PAGES 63", E("EINVAL")),
        ("SET_NR_MMU_PAGES 64", ("ok", 0)),
        ("SET_NR_MMU_PAGES 2147483647", ("ok", 0)),
        ("SET_NR_MMU_PAGES 128 after a vCPU", ("ok", 0)),
    ],
    "x86_vm_irqchip": [
        ("CREATE_IRQCHIP on /dev/kvm", E("EINVAL")),
        ("CREATE_IRQCHIP", ("ok", 0)),
        ("CREATE_IRQCHIP again", E("EEXIST")),
        ("SPLIT_IRQCHIP 24 after CREATE_IRQCHIP", E("EEXIST")),
        ("CREATE_IRQCHIP after a vCPU (irqchip exists)", E("EEXIST")),
        ("VM 2: CREATE_IRQCHIP after a vCPU", E("EINVAL")),
        ("VM 2: SPLIT_IRQCHIP 4097 after a vCPU", E("EINVAL")),
        ("VM 2: SPLIT_IRQCHIP 24 after a vCPU", E("EEXIST")),
        ("VM 3: SPLIT_IRQCHIP flags=1", E("EINVAL")),
        ("VM 3: SPLIT_IRQCHIP 4096", ("ok", 0)),
        ("VM 3: SPLIT_IRQCHIP 0 again", E("EEXIST")),
        ("VM 3: CREATE_IRQCHIP after SPLIT_IRQCHIP", E("EEXIST")),
    ],
    # paging_tmpl.h update_accessed_dirty_bits -> kvm_vcpu_mark_page_dirty with the vCPU
    # loaded (kvm_arch_vcpu_ioctl_translate's vcpu_load): kvm_dirty_ring_push per table page
    # whose entry got its A bit, again for a page already pushed; nothing for a failed walk
    "x86_vcpu_translate_dirty_ring": [
        ("ring after the first walk (flags, slot, gfn)",
         ("ok", ((1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 0, 4), (0, 0, 0), (0, 0, 0)))),
        ("ring after the second and third walks",
         ("ok", ((1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 0, 4), (1, 0, 3), (0, 0, 0), (0, 0, 0),
                 (0, 0, 0)))),
        ("ring after a walk that failed",
         ("ok", ((1, 0, 1), (1, 0, 2), (1, 0, 3), (1, 0, 4), (1, 0, 3), (0, 0, 0), (0, 0, 0),
                 (0, 0, 0)))),
    ],
    # kvm_dirty_ring_push raises KVM_REQ_DIRTY_RING_SOFT_FULL at the soft limit (4096 - 64
    # reserved entries); vcpu_enter_guest's kvm_dirty_ring_check_request exits at once
    "x86_vcpu_translate_dirty_ring_full": [
        ("walks that translated", ("ok", 1008)),
        ("ring entries pushed", ("ok", 4032)),
        ("KVM_RUN", ("ok", 0)),
        ("exit_reason", ("ok", K.KVM_EXIT_DIRTY_RING_FULL)),
    ],
    # x86.c kvm_arch_vm_ioctl: copy_from_user of the struct kvm_enc_region (EFAULT), then
    # ENOTTY when kvm_x86_ops has no mem_enc_register_region (VMX, this host)
    "x86_vm_enc_region": [
        ("REG_REGION NULL", E("EFAULT")),
        ("REG_REGION unmapped pointer", E("EFAULT")),
        ("REG_REGION a region", E("ENOTTY")),
        ("UNREG_REGION NULL", E("EFAULT")),
        ("UNREG_REGION an empty region", E("ENOTTY")),
        ("MEMORY_ENCRYPT_OP NULL", E("ENOTTY")),
        ("REG_REGION on /dev/kvm", E("EINVAL")),  # kvm_arch_dev_ioctl's default
    ],
    "x86_vm_tss_identity_map": [
        ("SET_TSS_ADDR 0 on /dev/kvm", E("EINVAL")),
        ("SET_TSS_ADDR 0x7ffff000", ("ok", 0)),
        # kvm_vm_ioctl_set_tss_addr: addr > (unsigned int)(-3 * PAGE_SIZE) is EINVAL
        ("SET_TSS_ADDR 0xfffbd000", ("ok", 0)),
        ("SET_TSS_ADDR 0xffffd000", ("ok", 0)),
        ("SET_TSS_ADDR 0xffffe000", E("EINVAL")),
        ("SET_TSS_ADDR 0x100000000", E("EINVAL")),
        ("SET_IDENTITY_MAP_ADDR 0xffffffffffffffff", ("ok", 0)),
        ("SET_IDENTITY_MAP_ADDR NULL", E("EFAULT")),
        ("SET_TSS_ADDR 0x2000 after a vCPU", ("ok", 0)),
        ("SET_IDENTITY_MAP_ADDR 0x1000 after a vCPU", E("EINVAL")),
        ("SET_IDENTITY_MAP_ADDR NULL after a vCPU", E("EINVAL")),
    ],
    "x86_vm_apic_bus_and_nx_huge_pages": [
        ("APIC_BUS_CYCLES_NS 0x0, no irqchip", E("EINVAL")),
        ("APIC_BUS_CYCLES_NS 0x1, no irqchip", E("ENXIO")),
        ("APIC_BUS_CYCLES_NS 0x2000001, no irqchip", E("EINVAL")),
        ("APIC_BUS_CYCLES_NS 0x1", ("ok", 0)),
        ("APIC_BUS_CYCLES_NS 0x2000000", ("ok", 0)),
        ("APIC_BUS_CYCLES_NS 0x2000001", E("EINVAL")),
        ("APIC_BUS_CYCLES_NS 0x1 after a vCPU", E("EINVAL")),
        ("VM 2: APIC_BUS_CYCLES_NS 0x2, split irqchip", ("ok", 0)),
        ("VM 3: DISABLE_NX_HUGE_PAGES 0x1", E("EINVAL")),
        ("VM 3: DISABLE_NX_HUGE_PAGES 0x0", ("ok", 0)),
        ("VM 3: DISABLE_NX_HUGE_PAGES 0x0 after a vCPU", E("EINVAL")),
    ],
}


# The x86 vCPU state ioctls (not reference rows): arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl,
# kvm_arch_dev_ioctl and the helpers each row names (docs/vcpu-state.md).
_X86_REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")


def _regs(**kw):
    return ("ok", tuple((n, kw.get(n, 0)) for n in _X86_REGS))


_X86_SREGS_BAD = ["cr0 bit 32", "cr0 NW without CD", "cr0 PG without PE",  # kvm_is_valid_cr0
                  "EFER.LMA outside long mode", "CS.L outside long mode",  # kvm_is_valid_sregs
                  "LME|PG without PAE", "LME|PG|PAE without LMA",
                  "long mode, cr3 above MAXPHYADDR 36",  # kvm_vcpu_is_legal_cr3, no CPUID: 36
                  "apic_base reserved bit 0", "apic_base x2APIC without CPUID",  # kvm_apic_set_base
                  "apic_base above MAXPHYADDR"]
_X86_IOCTLS = ("GET_REGS", "SET_REGS", "GET_SREGS", "SET_SREGS", "GET_FPU", "SET_FPU", "GET_MSRS",
               "SET_MSRS", "GET_CPUID2", "SET_CPUID2", "GET_MP_STATE", "SET_MP_STATE",
               "GET_VCPU_EVENTS", "SET_VCPU_EVENTS", "GET_DEBUGREGS", "SET_DEBUGREGS", "GET_XCRS",
               "SET_XCRS", "GET_XSAVE", "SET_XSAVE", "SET_SIGNAL_MASK")

REFERENCE.update({
    "fact_x86_vcpu_initial_state": [
        # kvm_vcpu_reset + vmx_vcpu_reset: RDX 0x600 without guest CPUID, RIP 0xfff0, RFLAGS 2
        ("vCPU 0 KVM_GET_REGS: value", _regs(rdx=0x600, rip=0xFFF0, rflags=2)),
        ("vCPU 1 KVM_GET_REGS: value", _regs(rdx=0x600, rip=0xFFF0, rflags=2)),
        # no in-kernel LAPIC: every vCPU is RUNNABLE (kvm_arch_vcpu_create)
        ("vCPU 1 KVM_GET_MP_STATE: value", ("ok", (("mp_state", 0),))),
        ("vCPU 0 KVM_GET_DEBUGREGS: value", ("ok", (("db", (0, 0, 0, 0)), ("dr6", 0xFFFF0FF0),
                                                    ("dr7", 0x400), ("flags", 0),
                                                    ("reserved", (0,) * 9)))),
        ("vCPU 0 KVM_GET_CPUID2 nent=4", ("ok", 0)),
        ("vCPU 0 nent after", ("ok", 0)),
        ("vCPU 0 XSAVE2 image equals XSAVE", ("ok", True)),
    ],
    "fact_x86_vcpu_round_trips": [
        ("KVM_SET_REGS", ("ok", 0)),
        ("interrupt_bitmap", ("ok", (0, 8, 0, 0))),  # kvm_queue_interrupt, get_sregs' bitmap
        ("KVM_SET_MSRS 6 MSRs", ("ok", 6)),  # msr_io: the number processed
        ("KVM_GET_MSRS the same 6", ("ok", 6)),
        ("KVM_SET_SIGNAL_MASK len 8", ("ok", 0)),
        ("KVM_SET_SIGNAL_MASK NULL", ("ok", 0)),
        ("KVM_SET_XCRS XCR0=7", ("ok", 0)),
    ],
    "fact_x86_vcpu_validation": [(f"KVM_SET_SREGS {c}", E("EINVAL")) for c in _X86_SREGS_BAD] + [
        ("KVM_SET_SREGS cr0 PG|PE (32-bit paging)", ("ok", 0)),
        ("KVM_SET_SREGS EFER.LME alone", ("ok", 0)),
        # kvm_vcpu_ioctl_x86_set_vcpu_events: unknown flags; PAYLOAD and TRIPLE_FAULT
        # without their VM capability; vector > 31 or NMI_VECTOR
        ("KVM_SET_VCPU_EVENTS flags=0x40", E("EINVAL")),
        ("KVM_SET_VCPU_EVENTS flags=0x10", E("EINVAL")),
        ("KVM_SET_VCPU_EVENTS flags=0x20", E("EINVAL")),
        ("KVM_SET_VCPU_EVENTS exception 2 injected", E("EINVAL")),
        ("KVM_SET_VCPU_EVENTS exception 31 injected", ("ok", 0)),
        ("KVM_SET_VCPU_EVENTS exception 32 injected", E("EINVAL")),
        ("KVM_SET_VCPU_EVENTS exception 255 pending without PAYLOAD", ("ok", 0)),
        # kvm_arch_vcpu_ioctl_set_mpstate without an in-kernel LAPIC
        ("KVM_SET_MP_STATE 0", ("ok", 0)),
        ("KVM_SET_MP_STATE 3", E("EINVAL")),
        ("KVM_SET_MP_STATE 11", E("EINVAL")),
        # kvm_vcpu_ioctl_x86_set_debugregs: flags, kvm_dr6_valid, kvm_dr7_valid
        ("KVM_SET_DEBUGREGS flags 1", E("EINVAL")),
        ("KVM_SET_DEBUGREGS dr6 bit 32", E("EINVAL")),
        ("KVM_SET_DEBUGREGS dr7 bit 32", E("EINVAL")),
        # kvm_vcpu_ioctl_x86_set_xcrs / __kvm_set_xcr
        ("KVM_SET_XCRS nr 17", E("EINVAL")),
        ("KVM_SET_XCRS flags 1", E("EINVAL")),
        ("KVM_SET_XCRS XCR0 0", E("EINVAL")),
        ("KVM_SET_XCRS XCR0 FP|YMM", E("EINVAL")),
        ("KVM_SET_XCRS XCR1 only", ("ok", 0)),
        # copy_uabi_to_xstate -> validate_user_xstate_header
        ("KVM_SET_XSAVE XCOMP_BV", E("EINVAL")),
        ("KVM_SET_XSAVE header reserved", E("EINVAL")),
        ("KVM_SET_XSAVE MXCSR bit 31 without SSE", ("ok", 0)),
        ("KVM_SET_SIGNAL_MASK len 4", E("EINVAL")),  # sizeof(kernel_sigset_t) = 8
        ("child: KVM_GET_REGS", E("EIO")),
        ("KVM_GET_REGS on the VM fd", E("ENOTTY")),
        ("KVM_GET_REGS on /dev/kvm", E("EINVAL")),
    ] + [(f"KVM_{n}(1) (unmapped address)", E("EFAULT")) for n in _X86_IOCTLS],
    "fact_x86_msrs": [
        # kvm_arch_dev_ioctl: the count is written back before the E2BIG check
        ("KVM_GET_MSR_INDEX_LIST nmsrs=0 (the count 0)", E("E2BIG")),
        ("nmsrs written back equals the count", ("ok", True)),
        ("KVM_GET_MSR_INDEX_LIST(NULL)", E("EFAULT")),
        # msr_io: nmsrs >= MAX_IO_MSRS (256) is E2BIG; __msr_io stops at the first refusal
        ("KVM_GET_MSRS 0 entries", ("ok", 0)),
        ("KVM_GET_MSRS 255 entries of SYSENTER_CS", ("ok", 255)),
        ("KVM_GET_MSRS 256 entries", E("E2BIG")),
        ("KVM_SET_MSRS 256 entries", E("E2BIG")),
        ("KVM_GET_MSRS STAR, 0xdeadbeef, LSTAR", ("ok", 1)),
        ("KVM_SET_MSRS STAR, 0xdeadbeef, LSTAR", ("ok", 1)),
        ("KVM_SET_MSRS STAR, LSTAR non-canonical, CSTAR", ("ok", 1)),
        ("STAR, LSTAR after the partial write", ("ok", ("0x2", "0x0"))),
        ("vCPU 1 wall clocks (one per VM)", ("ok", ("0x5000", "0x5000"))),
        ("child: KVM_GET_MSRS", E("EIO")),
    ],
    "fact_x86_cpuid2": [
        ("KVM_SET_CPUID2 nent=257", E("E2BIG")),  # kvm_vcpu_ioctl_set_cpuid2
        ("KVM_SET_CPUID2 nent=0", ("ok", 0)),
        # kvm_vcpu_ioctl_get_cpuid2: E2BIG before anything is written back
        ("KVM_GET_CPUID2 nent=0", E("E2BIG")),
        ("nent=0: nent after is the one given", ("ok", True)),
        ("KVM_GET_CPUID2 nent=count-1", E("E2BIG")),
        ("nent=count-1: nent after is the one given", ("ok", True)),
        ("RDX after KVM_SET_CPUID2 (set at reset only)", ("ok", "0x600")),
        ("KVM_SET_CPUID2 0x80000008 with 46 virtual bits", E("EINVAL")),  # kvm_check_cpuid
        ("KVM_SET_CPUID2 0x80000008 with 48 virtual bits", ("ok", 0)),
        ("KVM_SET_CPUID2(1)", E("EFAULT")),
        ("KVM_RUN (hlt)", ("ok", 0)),
        ("exit_reason", ("ok", b"\x05\x00\x00\x00")),  # KVM_EXIT_HLT
        # kvm_set_cpuid after kvm_vcpu_has_run: kvm_cpuid_check_equal
        ("after KVM_RUN: KVM_SET_CPUID2 the table KVM_GET_CPUID2 gave", ("ok", 0)),
        ("after KVM_RUN: KVM_SET_CPUID2 nent=0", E("EINVAL")),
        ("after KVM_RUN: KVM_SET_CPUID2 a changed table", E("EINVAL")),
        ("after KVM_RUN: KVM_SET_CPUID2 nent=257", E("E2BIG")),
        ("vCPU 1: KVM_SET_CPUID2 a changed table", ("ok", 0)),
    ],
    # kvm_vcpu_ioctl_x86_set_vcpu_events: VALID_PAYLOAD checked first, VALID_TRIPLE_FAULT
    # last (after the events were written); kvm_vm_ioctl_enable_cap stores both caps
    "fact_x86_vcpu_event_caps": [
        ("SET_VCPU_EVENTS VALID_PAYLOAD without the cap", E("EINVAL")),
        ("SET_VCPU_EVENTS VALID_TRIPLE_FAULT without the cap", E("EINVAL")),
        ("ENABLE_CAP EXCEPTION_PAYLOAD", ("ok", 0)),
        ("ENABLE_CAP X86_TRIPLE_FAULT_EVENT", ("ok", 0)),
        ("SET_VCPU_EVENTS a pending #PF with payload", ("ok", 0)),
        ("SET_VCPU_EVENTS pending vector 2 (NMI)", E("EINVAL")),
        ("SET_VCPU_EVENTS a pending triple fault", ("ok", 0)),
    ],
    # KVM_GET/SET_SREGS2: x86.c kvm_arch_vcpu_ioctl, __get_sregs2, __set_sregs2 (flags,
    # PDPTRs only with PAE paging in the new CR0/CR4/EFER), kvm_is_valid_sregs
    "fact_x86_sregs2": [
        ("CHECK_EXTENSION SREGS2", ("ok", 1)),
        ("KVM_SET_SREGS2 flags 0x2", E("EINVAL")),
        ("KVM_SET_SREGS2 flags 0x3", E("EINVAL")),
        ("KVM_SET_SREGS2 flags 0x8000000000000000", E("EINVAL")),
        ("KVM_SET_SREGS2 PDPTRS_VALID, no paging", E("EINVAL")),
        ("KVM_SET_SREGS2 PDPTRS_VALID, no CR4.PAE", E("EINVAL")),
        ("KVM_SET_SREGS2 PDPTRS_VALID, long mode", E("EINVAL")),
        ("KVM_SET_SREGS2 cr0 PG without PE", E("EINVAL")),
        ("KVM_SET_SREGS2 PAE paging with PDPTRs", ("ok", 0)),
        ("KVM_SET_SREGS2 PAE paging without PDPTRs, no memslot", ("ok", 0)),
        # no interrupt_bitmap in kvm_sregs2: the interrupt SET_SREGS queued stays
        ("interrupt_bitmap after SET_SREGS2", ("ok", (0, 8, 0, 0))),
        ("KVM_GET_SREGS2(8) (unmapped address)", E("EFAULT")),
        ("KVM_SET_SREGS2(8) (unmapped address)", E("EFAULT")),
    ],
    # KVM_GET/SET_LAPIC: x86.c kvm_arch_vcpu_ioctl (lapic_in_kernel: EINVAL before the
    # copy), lapic.c kvm_lapic_reset, kvm_apic_set_version, kvm_apic_get_state,
    # kvm_apic_set_state (SVR first, then kvm_apic_state_fixup), apic_update_ppr
    "fact_x86_lapic": [
        ("VM 1: KVM_GET_LAPIC", E("EINVAL")),
        ("VM 1: KVM_SET_LAPIC", E("EINVAL")),
        ("VM 1: KVM_SET_LAPIC(8) (unmapped address)", E("EINVAL")),
        ("VM 2: vCPU 0 KVM_GET_LAPIC: registers", ("ok", (
            ("0x30", "0x50014"), ("0xe0", "0xffffffff"), ("0xf0", "0xff"),
            ("0x320", "0x10000"), ("0x330", "0x10000"), ("0x340", "0x10000"),
            ("0x350", "0x700"), ("0x360", "0x10000"), ("0x370", "0x10000")))),
        ("VM 2: vCPU 1 KVM_GET_LAPIC: registers", ("ok", (
            ("0x20", "0x1000000"), ("0x30", "0x50014"), ("0xe0", "0xffffffff"),
            ("0xf0", "0xff"), ("0x320", "0x10000"), ("0x330", "0x10000"),
            ("0x340", "0x10000"), ("0x350", "0x10000"), ("0x360", "0x10000"),
            ("0x370", "0x10000")))),
        ("VM 2: vCPU 1 KVM_SET_LAPIC", ("ok", 0)),
        ("VM 2: KVM_GET_LAPIC(8) (unmapped address)", E("EFAULT")),
        ("VM 2: KVM_SET_LAPIC(8) (unmapped address)", E("EFAULT")),
        ("VM 4: vCPU 2 KVM_SET_LAPIC id 3 (32-bit ids)", E("EINVAL")),
        ("VM 4: vCPU 2 KVM_SET_LAPIC id 2 (32-bit ids)", ("ok", 0)),
    ],
    # KVM_SET_GUEST_DEBUG: kvm_main.c kvm_vcpu_ioctl (copy first), x86.c
    # kvm_arch_vcpu_ioctl_set_guest_debug (no KVM_GUESTDBG_VALID_MASK check on x86;
    # kvm_is_exception_pending: EBUSY); KVM_NMI: kvm_vcpu_ioctl_nmi, process_nmi's limit
    "fact_x86_guest_debug_nmi": [
        ("CHECK_EXTENSION 22", ("ok", 1)),
        ("CHECK_EXTENSION 23", ("ok", 1)),
        ("CHECK_EXTENSION 195", ("ok", 0x1F0003)),
        ("SET_GUEST_DEBUG control 0x10", ("ok", 0)),
        ("SET_GUEST_DEBUG control 0x80000000", ("ok", 0)),
        ("SET_GUEST_DEBUG INJECT_BP without ENABLE", ("ok", 0)),
        ("SET_GUEST_DEBUG INJECT_DB while #BP is pending", E("EBUSY")),
        ("SET_GUEST_DEBUG INJECT_DB|INJECT_BP", ("ok", 0)),
        ("SET_GUEST_DEBUG(8) (unmapped address)", E("EFAULT")),
        ("KVM_NMI 3", ("ok", 0)),
        ("VM 2: KVM_NMI", ("ok", 0)),
    ],
    # KVM_GET_MSRS on /dev/kvm: x86.c kvm_arch_dev_ioctl -> msr_io(NULL, ...,
    # do_get_feature_msr), kvm_do_msr_access (advertised MSRs read 0, a refused read is
    # zeroed), MAX_IO_MSRS; KVM_SET_MSRS is not a /dev/kvm ioctl
    "fact_x86_dev_get_msrs": [
        ("KVM_GET_MSRS ARCH_CAP, 0x10, PERF_CAP", ("ok", 3)),
        ("KVM_GET_MSRS ARCH_CAP, 0x1b, PERF_CAP", ("ok", 1)),
        ("KVM_GET_MSRS ARCH_CAP, 0xffffffff, PERF_CAP", ("ok", 1)),
        ("KVM_GET_MSRS nmsrs=0", ("ok", 0)),
        ("KVM_GET_MSRS nmsrs=255", ("ok", 255)),
        ("KVM_GET_MSRS nmsrs=256", E("E2BIG")),
        ("KVM_GET_MSRS(8) (unmapped address)", E("EFAULT")),
        ("vCPU KVM_GET_MSRS SYSENTER_CS, 0x1234, SYSENTER_ESP", ("ok", 1)),
        ("vCPU values (the refused entry zeroed)", ("ok", (0, 0, 7))),
        ("KVM_SET_MSRS on /dev/kvm", E("EINVAL")),
    ],
    # KVM_IOEVENTFD, KVM_IRQFD, KVM_SET_GSI_ROUTING: virt/kvm/eventfd.c, virt/kvm/irqchip.c,
    # virt/kvm/kvm_main.c KVM_SET_GSI_ROUTING, arch/x86/kvm/irq.c (kmock.kvm.eventfds)
    "eventfds_ioeventfd": [
        ('PIO 0x1000 len 1', ('ok', 0)),
        ('PIO 0x1000 len 1 again', E("EEXIST")),
        ('PIO 0x1000 len 1 other eventfd', E("EEXIST")),
        ('PIO 0x1000 len 2', ('ok', 0)),
        ('PIO 0x1000 len 0', E("EEXIST")),
        ('PIO 0x1100 len 3', E("EINVAL")),
        ('PIO 0x1100 len 5', E("EINVAL")),
        ('PIO 0x1100 len 16', E("EINVAL")),
        ('len 3, closed fd', E("EINVAL")),
        ('flags 0x10', ('ok', 0)),
        ('flags 0x20', E("EINVAL")),
        ('flags 0x20, closed fd', E("EINVAL")),
        ('len 0 DATAMATCH', E("EINVAL")),
        ('len 0 DATAMATCH, closed fd', E("EINVAL")),
        ('addr 2**64-1 len 1', E("EINVAL")),
        ('addr 2**64-8 len 8', E("EINVAL")),
        ('addr 2**64-1 len 1, closed fd', E("EINVAL")),
        ('closed fd', E("EBADF")),
        ('fd -1', E("EBADF")),
        ('/dev/kvm fd', E("EINVAL")),
        ('pipe fd', E("EINVAL")),
        ('PIO 0x2000 len 4 datamatch 1', ('ok', 0)),
        ('PIO 0x2000 len 4 datamatch 2', ('ok', 0)),
        ('PIO 0x2000 len 4 datamatch 1 again', E("EEXIST")),
        ('PIO 0x2000 len 4 wildcard', E("EEXIST")),
        ('PIO 0x2000 len 0', E("EEXIST")),
        ('PIO 0x2000 len 1 datamatch 1', ('ok', 0)),
        ('MMIO 0x1000 len 1', ('ok', 0)),
        ('MMIO 0x3000 len 0', ('ok', 0)),
        ('MMIO 0x3000 len 8', E("EEXIST")),
        ('CCW 0x1000 len 1', ('ok', 0)),
        ('CCW 0x1000 len 1 again', E("EEXIST")),
        ('PIO|CCW 0x1000 len 1 (the PIO bus)', E("EEXIST")),
        ('deassign PIO 0x1000 len 1', ('ok', 0)),
        ('deassign PIO 0x1000 len 1 again', E("ENOENT")),
        ('PIO 0x1000 len 1 after deassign', ('ok', 0)),
        ('deassign PIO 0x1000 len 2 other eventfd', E("ENOENT")),
        ('deassign closed fd', E("EBADF")),
        ('deassign /dev/kvm fd', E("EINVAL")),
        ('deassign len 3', E("ENOENT")),
        ('deassign len 3, closed fd', E("EBADF")),
        ('deassign flags 0x10 PIO 0x1000 len 2', ('ok', 0)),
        ('deassign wildcard 0x2000 len 4', E("ENOENT")),
        ('deassign datamatch 3', E("ENOENT")),
        ('deassign datamatch 2', ('ok', 0)),
        ('deassign MMIO 0x3000 len 0', ('ok', 0)),
        ('MMIO 0x3000 len 8 after deassign', ('ok', 0)),
        ('deassign CCW 0x1000 len 1', ('ok', 0)),
        ('deassign PIO 0x1000 len 1 (its fd closed)', E("EBADF")),
    ],
    "eventfds_irqfd": [
        ('no irqchip: gsi 5', E("EINVAL")),
        ('no irqchip: closed fd', E("EINVAL")),
        ('no irqchip: flags 4', E("EINVAL")),
        ('no irqchip: deassign', ('ok', 0)),
        ('no irqchip: deassign closed fd', E("EBADF")),
        ('CREATE_IRQCHIP', ('ok', 0)),
        ('gsi 5', ('ok', 0)),
        ('gsi 5 again', E("EBUSY")),
        ('same eventfd gsi 6', E("EBUSY")),
        ('other eventfd gsi 5', ('ok', 0)),
        ('closed fd', E("EBADF")),
        ('fd 0xffffffff', E("EBADF")),
        ('/dev/kvm fd', E("EINVAL")),
        ('flags 4, closed fd', E("EINVAL")),
        ('gsi 0xffffffff', ('ok', 0)),
        ('RESAMPLE closed resamplefd', E("EBADF")),
        ('RESAMPLE /dev/kvm resamplefd', E("EINVAL")),
        ('RESAMPLE closed fd', E("EBADF")),
        ('RESAMPLE gsi 8', ('ok', 0)),
        ('deassign gsi 6 (bound to 5)', ('ok', 0)),
        ('gsi 6 after a deassign that matched nothing', E("EBUSY")),
        ('deassign gsi 5', ('ok', 0)),
        ('deassign closed fd', E("EBADF")),
        ('deassign /dev/kvm fd', E("EINVAL")),
        ('deassign|RESAMPLE gsi 8', ('ok', 0)),
        ('gsi 6 after deassign, counter 3 pending', ('ok', 0)),
        ('counter after KVM_IRQFD', ('ok', 3)),  # the initial poll injects, reads nothing
        ('VM 2: SPLIT_IRQCHIP 24', ('ok', 0)),
        ('VM 2 (split): gsi 5', E("EBUSY")),
        ('VM 2 (split): RESAMPLE gsi 9', E("EINVAL")),
    ],
    "eventfds_gsi_routing": [
        ('no irqchip: nr 0', E("EINVAL")),
        ('no irqchip: nr 4097', E("EINVAL")),
        ('CREATE_IRQCHIP', ('ok', 0)),
        ('nr 0', ('ok', 0)),
        ('nr 4097', E("EINVAL")),
        ('flags 1', E("EINVAL")),
        ('PIC master pin 7', ('ok', 0)),
        ('PIC master pin 8', E("EINVAL")),
        ('PIC slave pin 7', ('ok', 0)),
        ('PIC slave pin 8', E("EINVAL")),
        ('IOAPIC pin 23', ('ok', 0)),
        ('IOAPIC pin 24', E("EINVAL")),
        ('irqchip 3', E("EINVAL")),
        ('irqchip flags 1', E("EINVAL")),
        ('gsi 4095', ('ok', 0)),
        ('gsi 4096', E("EINVAL")),
        ('gsi 4096 after a bad entry', E("EINVAL")),
        ('MSI', ('ok', 0)),
        ('MSI flags VALID_DEVID', ('ok', 0)),
        ('MSI flags 2', E("EINVAL")),
        ('MSI address_hi 0xff', ('ok', 0)),
        ('type 0', E("EINVAL")),
        ('type S390_ADAPTER', E("EINVAL")),
        ('type 6', E("EINVAL")),
        ('PIC master + IOAPIC on gsi 2', ('ok', 0)),
        ('IOAPIC twice on gsi 2', E("EINVAL")),
        ('PIC master + slave on gsi 2', ('ok', 0)),
        ('MSI twice on gsi 3', E("EINVAL")),
        ('IOAPIC + MSI on gsi 3', E("EINVAL")),
        ('MSI + IOAPIC on gsi 3', E("EINVAL")),
        ('MSI on gsi 3 and 4', ('ok', 0)),
        ('VM 2: SPLIT_IRQCHIP 24', ('ok', 0)),
        ('VM 2 (split): nr 0', ('ok', 0)),
        ('VM 2 (split): IOAPIC pin 0', E("EINVAL")),
        ('VM 2 (split): MSI address_hi 0x1', ('ok', 0)),
        ('VM 2: X2APIC_API USE_32BIT_IDS', ('ok', 0)),
        ('VM 2 (32-bit ids): MSI address_hi 0x1', E("EINVAL")),
        ('VM 2 (32-bit ids): MSI address_hi 0x100', ('ok', 0)),
    ],
    # kvmclock: arch/x86/kvm/x86.c kvm_vm_ioctl_get_clock / kvm_vm_ioctl_set_clock
    # (flags & ~KVM_CLOCK_VALID_FLAGS -> EINVAL), kvm_set_guest_paused (!pv_time.active ->
    # EINVAL), kvm_arch_vm_ioctl's default ENOTTY, kvm_arch_vcpu_ioctl's default EINVAL
    "x86_vm_clock": [
        ("CHECK_EXTENSION(ADJUST_CLOCK) on /dev/kvm", ("ok", 14)),
        ("CHECK_EXTENSION(KVMCLOCK_CTRL)", ("ok", 1)),
        ("GET_CLOCK on /dev/kvm", E("EINVAL")),
        ("GET_CLOCK new VM: flags", ("ok", 0)),
        ("new VM: clock below 1 s", ("ok", True)),
        ("GET_CLOCK NULL", E("EFAULT")),
        ("SET_CLOCK NULL", E("EFAULT")),
        ("SET_CLOCK flags 0x1", E("EINVAL")),
        ("SET_CLOCK flags 0x10", E("EINVAL")),
        ("SET_CLOCK flags 0xf", E("EINVAL")),
        ("refused SETs left the clock", ("ok", True)),
        ("SET_CLOCK 1000 s flags 0xa", ("ok", 0)),
        ("within a second of 1000 s", ("ok", True)),
        ("SET_CLOCK 5 pad0=7", ("ok", 0)),
        ("back below 1 s", ("ok", True)),
        ("within a second of 11 s", ("ok", True)),
        ("within a second of 1 s", ("ok", True)),
        ("GET_CLOCK on the vCPU", E("EINVAL")),
        ("KVMCLOCK_CTRL on the VM", E("ENOTTY")),
        ("GET_CLOCK with a vCPU, before a SET: flags", ("ok", 0)),
        ("SET_CLOCK what GET returned", ("ok", 0)),
        ("KVMCLOCK_CTRL, no pvclock", E("EINVAL")),
        ("KVMCLOCK_CTRL after 0x4b564d01=0x1000", E("EINVAL")),
        ("KVMCLOCK_CTRL after 0x4b564d01=0x1001", ("ok", 0)),
        ("KVMCLOCK_CTRL after 0x12=0x2000", E("EINVAL")),
        ("KVMCLOCK_CTRL after 0x12=0x2001", ("ok", 0)),
        ("KVMCLOCK_CTRL after 0x4b564d01=0x0", E("EINVAL")),
    ],
    # dirty logging: virt/kvm/kvm_main.c kvm_get_dirty_log_protect,
    # kvm_clear_dirty_log_protect, kvm_prepare_memory_region (kmock.kvm.dirty_log)
    "dirty_log": [
        ("GET_DIRTY_LOG on /dev/kvm", E("EINVAL")),
        ("GET no slot", E("ENOENT")),
        ("GET slot id 32764", E("EINVAL")),
        ("GET as_id 2", E("EINVAL")),
        ("GET slot without LOG_DIRTY_PAGES", E("ENOENT")),
        ("CLEAR slot without LOG_DIRTY_PAGES", E("ENOENT")),
        ("GET logged slot: bitmap", ("ok", "00" * 16 + "aa" * 8)),
        ("GET NULL bitmap", E("EFAULT")),
        ("CLEAR without manual protect", ("ok", 0)),
        ("GET after logging off", E("ENOENT")),
        ("VM 2: MANUAL_DIRTY_LOG_PROTECT2 2", E("EINVAL")),
        ("VM 2: MANUAL_DIRTY_LOG_PROTECT2 0", ("ok", 0)),
        ("VM 2: GET again: bitmap", ("ok", "ff" * 12 + "0f000000" + "aa" * 8)),
        ("VM 2: CLEAR first 1 num 10", E("EINVAL")),
        ("VM 2: CLEAR first 64 num 36", ("ok", 0)),
        ("VM 2: CLEAR first 64 num 37", E("EINVAL")),
        ("VM 2: CLEAR first 0 num 10", E("EINVAL")),
        ("VM 2: GET after CLEAR 0 10: bitmap", ("ok", "ff" * 8 + "00" * 8 + "aa" * 8)),
        ("VM 2: CLEAR first 128 num 0", E("EINVAL")),
        ("VM 2: CLEAR first 100 num 0", E("EINVAL")),
        ("VM 2: CLEAR first 0 num 0", ("ok", 0)),
        ("VM 2: CLEAR NULL", E("EFAULT")),
        ("VM 2: CLEAR no slot", E("ENOENT")),
        ("VM 2: CLEAR no slot, first 1", E("EINVAL")),
        ("VM 2: CLEAR slot id 32764", E("EINVAL")),
        ("VM 2: GET after LOG off/on: bitmap", ("ok", "ff" * 12 + "0f000000" + "aa" * 8)),
        ("VM 3: GET (bitmap made before INITIALLY_SET): bitmap", ("ok", "00" * 16 + "aa" * 8)),
        ("VM 3: GET after a move: bitmap", ("ok", "ff" * 12 + "0f000000" + "aa" * 8)),
    ],
    # arch/x86/kvm/x86.c kvm_vm_ioctl_set_msr_filter / kvm_add_msr_filter
    # (KVM_MSR_FILTER_MAX_BITMAP_SIZE 0x600: at most 0x3000 MSRs per range)
    "x86_vm_msr_filter": [
        ("allow, no ranges (no filter)", ("ok", 0)),
        ("deny, no ranges", E("EINVAL")),
        ("flags 0x2", E("EINVAL")),
        ("range flags 0x0", E("EINVAL")),
        ("range flags 0x4", E("EINVAL")),
        ("range flags 0, nmsrs 0 (skipped)", ("ok", 0)),
        ("nmsrs 0x3000", ("ok", 0)),
        ("nmsrs 0x3001", E("EINVAL")),
        ("NULL bitmap", E("EFAULT")),
        ("range 0 bad flags, range 1 NULL bitmap", E("EINVAL")),
        ("range 0 NULL bitmap, range 1 bad flags", E("EFAULT")),
    ],
    # kvm_vm_ioctl_irq_line (ENXIO), kvm_set_irq (-1 + each route's result), i8259.c
    # pic_set_irq1 (edge memory), ioapic.c ioapic_set_irq (masked: -1; coalesced edge: 0;
    # lowering: 1), kvm_set_msi (-1 for level 0), kvm_send_userspace_msi (its value)
    "x86_irq_line": [
        ("no irqchip: IRQ_LINE_STATUS", E("ENXIO")),
        ("no irqchip: IRQ_LINE", E("ENXIO")),
        ("kernel irqchip 0: gsi 0 level 1: status", ("ok", 1)),
        ("kernel irqchip 2: gsi 0 level 0: status", ("ok", 2)),
        ("kernel irqchip 9: gsi 16 level 1: status", ("ok", -1)),
        ("kernel irqchip 10: gsi 16 level 1: status", ("ok", 0)),
        ("kernel irqchip 11: gsi 16 level 0: status", ("ok", 1)),
        ("kernel irqchip 21: gsi 24 level 1: status", ("ok", -1)),
        ("split, no routes: gsi 0: status", ("ok", -1)),
        ("split, no vCPU: gsi 5: status", ("ok", -1)),
        ("split, vCPU 0 enabled: gsi 5: status", ("ok", 1)),
        ("split, vCPU 0 enabled: gsi 5 level 0: status", ("ok", -1)),
        ("SIGNAL_MSI flags 2", E("EINVAL")),
        ("SIGNAL_MSI NULL", E("EFAULT")),
        ("SIGNAL_MSI without irqchip", E("EINVAL")),
        ("SIGNAL_MSI without vCPUs", E("EPERM")),
        ("SIGNAL_MSI address_hi 1 with 32-bit ids", E("EINVAL")),
    ],
    # x86.c kvm_arch_vcpu_ioctl: vcpu_ioctl_tpr_access_reporting (flags EINVAL),
    # KVM_SET_VAPIC_ADDR (lapic_in_kernel before the copy; kvm_lapic_set_vapic_addr)
    "x86_vcpu_tpr_vapic": [
        ("TPR no irqchip enable", ("ok", 0)),
        ("TPR flags 1", E("EINVAL")),
        ("TPR NULL", E("EFAULT")),
        ("VAPIC NULL without an irqchip", E("EINVAL")),
        ("split: VAPIC NULL", E("EFAULT")),
        ("split: VAPIC 0x0 (0)", ("ok", 0)),
        ("split: VAPIC 0x100000 (memslot page 0)", ("ok", 0)),
        ("split: VAPIC 0x104000 (just past the memslot)", E("EINVAL")),
    ],
    # virt/kvm/kvm_main.c kvm_vm_release -> eventfd.c kvm_irqfd_release (an eventfd is one
    # irqfd's exclusive waiter: EBUSY until that irqfd is shut down)
    "eventfds_irqfd_vm_release": [
        ("VM 2: irqfd of VM 1's eventfd", E("EBUSY")),
        ("VM 2: irqfd of the eventfd after VM 1's fd closed", ("ok", 0)),
        ("VM 1's vCPU: KVM_GET_REGS", ("ok", 0)),
    ],
    # x86.c __kvm_emulate_halt (lapic_in_kernel: KVM_MP_STATE_HALTED, no exit), vcpu_block
    # and kvm_handle_signal_exit (KVM_EXIT_INTR, -EINTR)
    "x86_halt_in_kernel": [
        ("no irqchip: exit_reason", ("ok", 5)),
        ("split irqchip: KVM_RUN (the guest halts; kicked after 0.3 s)", E("EINTR")),
        ("split irqchip: exit_reason", ("ok", 10)),
        ("split irqchip: mp_state", ("ok", 3)),
        ("full irqchip: KVM_RUN (the guest halts; kicked after 0.3 s)", E("EINTR")),
        ("full irqchip: mp_state", ("ok", 3)),
    ],
    # x86.c kvm_arch_vcpu_ioctl_set_mpstate (the LAPIC-only states; SIPI_RECEIVED becomes
    # INIT_RECEIVED + a pending SIPI that GET accepts: RUNNABLE) and kvm_arch_vcpu_ioctl_run
    # (UNINITIALIZED: kvm_vcpu_block, then -EINTR with KVM_EXIT_INTR on a signal)
    "x86_mp_state_lapic": [
        *[(f"{mode}: {label}", want) for mode in ("split irqchip", "full irqchip")
          for label, want in (
              ("KVM_SET_MP_STATE 0x1", ("ok", 0)), ("mp_state after 0x1", ("ok", 1)),
              ("KVM_SET_MP_STATE 0x3", ("ok", 0)), ("mp_state after 0x3", ("ok", 3)),
              ("KVM_SET_MP_STATE 0x4", ("ok", 0)), ("mp_state after 0x4", ("ok", 0)),
              ("KVM_SET_MP_STATE 0x5", E("EINVAL")), ("mp_state after 0x5", ("ok", 0)),
              ("KVM_SET_MP_STATE 0x9", ("ok", 0)), ("mp_state after 0x9", ("ok", 9)),
              ("KVM_SET_MP_STATE 0xa", E("EINVAL")),
              ("KVM_RUN of an AP waiting for SIPI (kicked after 0.3 s)", E("EINTR")),
              ("exit_reason", ("ok", 10)), ("mp_state after the run", ("ok", 1)))],
    ],
    # x86.c kvm_get_msr_common / kvm_set_msr_common (PLATFORM_ID and PERF_CTL read 0,
    # PERF_STATUS reads 1000 | 4 << 40, writes refused; TSC_AUX bits 63:32 reserved), the
    # vPMU's counters with no PMU in the guest (writes dropped), vmx_get/set_msr FS/GS_BASE
    # (the segment bases, canonical only)
    "x86_unlisted_msrs": [
        ("fresh: 0x17 reads", ("ok", "0x0")), ("SET_MSRS 0x17 = 0x0", ("ok", 0)),
        ("fresh: 0xc1 reads", ("ok", "0x0")), ("SET_MSRS 0xc1 = 0x1234", ("ok", 1)),
        ("after 0x1234: 0xc1 reads", ("ok", "0x0")),
        ("fresh: 0x198 reads", ("ok", "0x400000003e8")), ("SET_MSRS 0x198 = 0x0", ("ok", 0)),
        ("SET_MSRS 0x199 = 0x0", ("ok", 0)),
        ("SET_MSRS 0xc0000100 = 0x8000000000001000", ("ok", 0)),
        ("after 0xffff800000001000: 0xc0000100 reads", ("ok", "0xffff800000001000")),
        ("SET_MSRS 0xc0000103 = 0x1234", ("ok", 1)),
        ("SET_MSRS 0xc0000103 = 0x100000000", ("ok", 0)),
        ("after 0x100000000: 0xc0000103 reads", ("ok", "0x1234")),
        ("sregs fs.base", ("ok", "0x1234")),
        ("after SET_SREGS: 0xc0000101 reads", ("ok", "0x5678")),
    ],
    # x86.c kvm_vcpu_ioctl_x86_set_vcpu_events (VALID_SMM: smi.latched_init sets or clears
    # KVM_APIC_INIT; GET reads kvm_lapic_latched_init) and lapic.c kvm_apic_accept_events
    # (from kvm_arch_vcpu_ioctl_get_mpstate): kvm_vcpu_reset(init_event) and
    # kvm_lapic_reset(init_event), the BSP RUNNABLE, an AP INIT_RECEIVED; the MSRs kept
    "x86_init_event": [
        *[(f"{who}: {label}", want) for who, mp in (("BSP", 0), ("AP", 2)) for label, want in (
            ("latch cleared: mp_state", ("ok", 0)),
            ("INIT latched: nmi, interrupt, shadow, exception, latched_init",
             ("ok", (1, 1, 1, 48, 1, 1, 13, 8, 1))),
            ("INIT latched, not accepted: debugregs", ("ok", ("0x4444", "0xffff0ff0", "0x401"))),
            ("INIT: mp_state", ("ok", mp)),
            ("INIT accepted: nmi, interrupt, shadow, exception, latched_init",
             ("ok", (0, 0, 0, 48, 0, 0, 13, 8, 0))),
            ("INIT accepted: debugregs", ("ok", ("0x0", "0xffff0ff0", "0x400"))),
            ("INIT accepted: LAPIC TPR, SVR, LVTT", ("ok", ("00000000", "ff000000", "00000100"))),
            ("INIT accepted: STAR", ("ok", "0x1234")))],
    ],
    # lapic.c kvm_apic_accept_events (a pending SIPI is consumed; delivered only to an
    # INIT_RECEIVED vCPU) and x86.c kvm_vcpu_deliver_sipi_vector (CS = vector << 8, base
    # vector << 12, RIP 0), reached from kvm_arch_vcpu_ioctl_get_mpstate, not from the SET
    # or GET_SREGS; kvm_vcpu_ioctl_x86_set_vcpu_events stores apic->sipi_vector only with
    # VALID_SIPI_VECTOR, and GET reports 0; KVM_RUN with immediate_exit returns -EINTR first
    "x86_sipi_vector": [
        ("at reset: cs selector, base, rip", ("ok", ("0xf000", "0xffff0000", "0xfff0"))),
        ("vector 0x12: sipi_vector read back", ("ok", 0)),
        ("vector 0x12, before GET_MP_STATE: cs selector, base, rip",
         ("ok", ("0xf000", "0xffff0000", "0xfff0"))),
        ("vector 0x12: mp_state", ("ok", 0)),
        ("vector 0x12, after GET_MP_STATE: cs selector, base, rip", ("ok", ("0x1200", "0x12000", "0x0"))),
        ("vector 0x34 without the flag: cs selector, base, rip", ("ok", ("0x1200", "0x12000", "0x0"))),
        ("vector 0x56, RUNNABLE before the accept: mp_state", ("ok", 0)),
        ("vector 0x56, RUNNABLE before the accept: cs selector, base, rip",
         ("ok", ("0x1200", "0x12000", "0x0"))),
        ("vector 0x78: KVM_RUN with immediate_exit", E("EINTR")),
        ("vector 0x78, after KVM_RUN with immediate_exit: cs selector, base, rip",
         ("ok", ("0x1200", "0x12000", "0x0"))),
        ("vector 0x78, after GET_MP_STATE: cs selector, base, rip", ("ok", ("0x7800", "0x78000", "0x0"))),
    ],
    # x86.c kvm_arch_vm_ioctl KVM_SET/GET_TSC_KHZ (kvm->created_vcpus check: EINVAL after
    # the first vCPU) and kvm_arch_vcpu_create (kvm_set_tsc_khz of the VM's default)
    "x86_vm_tsc_khz": [
        ("vCPU 0 GET_TSC_KHZ is the VM's default", ("ok", True)),
        ("SET_TSC_KHZ (VM) after a vCPU", E("EINVAL")),
        ("GET_TSC_KHZ (VM) unchanged", ("ok", True)),
    ],
    # virt/kvm/coalesced_mmio.c; kvm_io_bus_register_dev (NR_IOBUS_DEVS 1000)
    "coalesced_mmio": [
        ("MMIO zone", ("ok", 0)),
        ("pio 2", E("EINVAL")),
        ("NULL", E("EFAULT")),
        ("unregister nothing", ("ok", 0)),
        ("unregister pio 3", E("EINVAL")),
        ("PIO bus: the failure", ("ok", "ENOSPC")),
        ("irqchip: PIO bus: zones registered before the first failure", ("ok", 997)),
        ("irqchip: MMIO bus: zones registered before the first failure", ("ok", 999)),
        ("PIT: PIO bus: zones registered before the first failure", ("ok", 996)),
        ("PIT with the speaker: PIO bus: zones registered before the first failure", ("ok", 995)),
    ],
})

# machine check, MTRRs, /dev/kvm attributes (kmock.testing.conformance_x86_mce): x86.c
# kvm_arch_dev_ioctl (KVM_X86_GET_MCE_CAP_SUPPORTED, KVM_GET/HAS_DEVICE_ATTR ->
# kvm_x86_dev_get_attr), kvm_arch_vm_ioctl's default ENOTTY, kvm_arch_vcpu_ioctl's default
# EINVAL, kvm_vcpu_ioctl_x86_setup_mce (banks 0 or > KVM_MAX_MCE_BANKS, bits outside
# supported | 0xff | 0xff0000: EINVAL), kvm_arch_vcpu_create (mcg_cap = 32 banks),
# set_msr_mce / get_msr_mce, kvm_vcpu_ioctl_x86_set_mce; arch/x86/kvm/mtrr.c
REFERENCE.update({
    "x86_mce_setup": [
        ("CHECK_EXTENSION(MCE)", ("ok", 32)),
        ("GET_MCE_CAP_SUPPORTED(8)", E("EFAULT")),
        ("GET_MCE_CAP_SUPPORTED on the VM", E("ENOTTY")),
        ("GET_MCE_CAP_SUPPORTED on the vCPU", E("EINVAL")),
        ("SETUP_MCE on /dev/kvm", E("EINVAL")),
        ("SETUP_MCE on the VM", E("ENOTTY")),
        ("GET_MSRS MC0_CTL .. MC31_MISC, MC32_CTL", ("ok", 128)),
        ("bank values", ("ok", (0,))),
        ("GET_MSRS MC0_CTL2 .. MC31_CTL2, MC32_CTL2", ("ok", 32)),
        ("SETUP_MCE 0x0", E("EINVAL")),
        ("SETUP_MCE 0x21", E("EINVAL")),
        ("SETUP_MCE 0xff", E("EINVAL")),
        ("SETUP_MCE 0x100", E("EINVAL")),
        ("SETUP_MCE(8)", E("EFAULT")),
        ("SETUP_MCE 32 banks | 0xff0000", ("ok", 0)),
        ("SETUP_MCE QEMU's CTL_P|SER_P|10", ("ok", 0)),
        ("GET_MSRS MC0_CTL .. MC9_MISC, MC10_CTL", ("ok", 40)),
        ("GET_MSRS MC0_CTL2 .. MC9_CTL2, MC10_CTL2", ("ok", 10)),
        ("GET_MSRS MC0_CTL .. MC1_MISC, MC2_CTL", ("ok", 8)),
    ],
    "x86_mce_msrs": [
        ("SET_MSRS MC0_STATUS=7, MC0_CTL=1 (refused), MC0_ADDR=9", ("ok", 1)),
        ("SET_MSRS QEMU 7.2's MCE block (42 entries)", ("ok", 42)),
        ("GET_MSRS them back", ("ok", 42)),
        ("VM 2: MCG_CTL without CTL_P: (index, value, set, get, read)",
         ("ok", (("0x17b", "0x0", 1, 1, "0x0"), ("0x17b", "0xffffffffffffffff", 0, 1, "0x0"),
                 ("0x17b", "0x1", 0, 1, "0x0")))),
    ],
    "x86_mce_set_mce": [
        ("SET_MCE bank 0 corrected, before SETUP_MCE (32 banks)", ("ok", 0)),
        ("SET_MCE bank 32", E("EINVAL")),
        ("SET_MCE bank 0 without VAL", E("EINVAL")),
        ("SET_MCE(8)", E("EFAULT")),
        ("SET_MCE on /dev/kvm", E("EINVAL")),
        ("SET_MCE bank 10 (10 banks)", E("EINVAL")),
        ("MCG_STATUS, MC1_CTL..MISC (corrected)",
         ("ok", ("0x0", "0xffffffffffffffff", "0x8000000000000011", "0x1000", "0x86"))),
        ("MCG_STATUS, MC1_CTL..MISC (corrected twice: OVER)",
         ("ok", ("0x0", "0xffffffffffffffff", "0xc000000000000012", "0x2000", "0x86"))),
        ("MCG_STATUS, MC2_CTL..MISC (only OVER added)",
         ("ok", ("0x0", "0xffffffffffffffff", "0xe000000000000013", "0x1000", "0x86"))),
        ("MCG_STATUS, MC3_CTL..MISC (not recorded)", ("ok", ("0x0", "0xffffffffffffffff", "0x0", "0x0", "0x0"))),
        ("exception injected, pending, nr; triple fault pending (triple fault requested)",
         ("ok", (0, 0, 0, 1))),
        ("MCG_STATUS, MC5_CTL..MISC (recorded)",
         ("ok", ("0x5", "0xffffffffffffffff", "0xa300000000000000", "0x5000", "0x86"))),
        ("exception injected, pending, nr; triple fault pending (#MC queued)", ("ok", (1, 1, 18, 1))),
        ("MCG_STATUS, MC7_CTL..MISC (dropped)", ("ok", ("0x0", "0xffffffffffffffff", "0x0", "0x0", "0x0"))),
        # kvm_multiple_exception: #MC is benign, it replaces a queued #GP; after #DF it
        # is a triple fault (KVM_REQ_TRIPLE_FAULT) and the #DF stays
        ("VM 2: exception injected, pending, nr, error code; triple fault (13)",
         ("ok", (1, 1, 18, 0, 0))),
        ("VM 2: exception injected, pending, nr, error code; triple fault (8)",
         ("ok", (1, 0, 8, 1, 1))),
    ],
    "x86_mtrr_msrs": [
        ("GET_MSRS MTRRcap, deftype, fixed, variable", ("ok", 29)),
        ("MTRRcap writes", ("ok", (("0xfe", "0x0", 0, 1, "0x508"), ("0xfe", "0x508", 0, 1, "0x508")))),
        ("processed", ("ok", 1)),
        ("SET_MSRS QEMU 7.2's MTRR block (28 entries)", ("ok", 28)),
    ],
    "x86_dev_attr": [
        ("CHECK_EXTENSION(SYS_ATTRIBUTES)", ("ok", 1)),
        ("GET_DEVICE_ATTR flags=0x0 group=0x0 attr=0x0", ("ok", 0)),
        ("HAS_DEVICE_ATTR flags=0x0 group=0x0 attr=0x0", ("ok", 0)),
        ("GET_DEVICE_ATTR flags=0xffffffff group=0x0 attr=0x0", ("ok", 0)),
        ("GET_DEVICE_ATTR flags=0x0 group=0x0 attr=0x1", E("ENXIO")),
        ("HAS_DEVICE_ATTR flags=0x0 group=0x0 attr=0x1", E("ENXIO")),
        ("GET_DEVICE_ATTR flags=0x0 group=0x2 attr=0x0", E("ENXIO")),
        ("GET_DEVICE_ATTR group=0 attr=0 addr=8", E("EFAULT")),
        ("GET_DEVICE_ATTR group=0 attr=1 addr=8", E("ENXIO")),
        ("GET_DEVICE_ATTR(8)", E("EFAULT")),
        ("HAS_DEVICE_ATTR(8)", E("EFAULT")),
        ("GET_DEVICE_ATTR on a VM", E("ENOTTY")),
    ],
})

# Rows the reference marks [HOST-SPECIFIC]: they hold on the probe host only.
HOST_SPECIFIC = {
    # the host clocksource is the TSC: with a vCPU, after the master clock update
    # KVM_SET_CLOCK runs, __get_kvmclock reports TSC_STABLE | REALTIME | HOST_TSC
    "x86_vm_clock": [
        ("GET_CLOCK with a vCPU, after a SET: flags", ("ok", 14)),
        ("realtime within a second of now", ("ok", True)),
        ("host_tsc nonzero", ("ok", True)),
    ],
    # a shadow-paging host: the pool KVM_SET_NR_MMU_PAGES sizes loads the MMU root, then the
    # TDP check refuses the pre-fault; without it the empty pool is ENOSPC (x86.c, mmu.c)
    "x86_vm_nr_mmu_pages": [
        ("PRE_FAULT_MEMORY of a VM without memslots, after SET_NR_MMU_PAGES", ENOTSUP),
        ("VM 2: PRE_FAULT_MEMORY without memslots or SET_NR_MMU_PAGES", E("ENOSPC")),
    ],
    # the probe host (6.18.44-fc, kvm_pvm, no TSC scaling): the host CPU's CR4 features
    # (cr4_reserved_bits), 2.1 GHz TSC, 43 MSRs in KVM_GET_MSR_INDEX_LIST
    "fact_x86_vcpu_validation": [
        ("KVM_SET_SREGS cr4 bit 13 without CPUID", E("EINVAL")),
        ("KVM_SET_SREGS cr4 bit 17 without CPUID", E("EINVAL")),
        ("KVM_SET_SREGS cr4 bit 18 without CPUID", ("ok", 0)),
        ("KVM_SET_TSC_KHZ 2099000", E("EINVAL")),  # kvm_set_tsc_khz below the tolerance
        ("KVM_GET_TSC_KHZ after 2099000", ("ok", 2099000)),  # virtual_tsc_khz set before
    ],
    "fact_x86_vcpu_round_trips": [
        ("KVM_GET_TSC_KHZ after 0", ("ok", 2100000)),
        ("KVM_SET_TSC_KHZ 2300000", ("ok", 0)),  # above: always catch up, no scaling
    ],
    "fact_x86_vcpu_initial_state": [("vCPU 0 KVM_GET_TSC_KHZ", ("ok", 2100000))],
    "fact_x86_msrs": [("KVM_GET_MSR_INDEX_LIST nmsrs=42 (the count -1)", E("E2BIG"))],

    "probe_37_set_memory_attributes_default_vm": [
        ("attrs=PRIVATE [0,P)", E("ENOTTY")),
        ("attrs=0 [0,P)", E("ENOTTY")),
        ("size 0", E("ENOTTY")),
    ],
    "probe_39_pre_fault_memory": [
        ("valid gpa 0 size P", ENOTSUP),
        ("struct after valid call (gpa, size)", ("ok", (0, P))),
        ("flags=1", E("EINVAL")),
        ("size=0", E("EINVAL")),
        ("on the VM fd", E("ENOTTY")),
    ],
    # shadow paging (kvm.tdp_mmu=N, no TDP): the MMU root needs the page pool that the
    # first memslot sizes (kvm_mmu_reload before kvm_tdp_map_page's TDP check)
    "fact_pre_fault_mmu_root": [
        ("KVM_CHECK_EXTENSION(236) on /dev/kvm", ("ok", 0)),
        ("no memslot: gpa 0 size P", E("ENOSPC")),
        ("no memslot: size 1 TiB", E("ENOSPC")),
        ("vCPU 0, inside slot 0", ENOTSUP),
        ("vCPU 1, inside slot 0", ENOTSUP),
        ("vCPU 1 after the memslot is deleted", ENOTSUP),
    ],
    "fact_run_mmu_root": [("KVM_RUN", E("ENOSPC")), ("KVM_RUN again", E("ENOSPC"))],
    "probe_41_create_vm_types": [(f"KVM_CREATE_VM type {t}", E("EINVAL")) for t in range(1, 7)]
    + [("KVM_CHECK_EXTENSION(235) on /dev/kvm", ("ok", 1))],
    "fact_memslot_rules": [("as_id 1 (slot 1|1<<16)", E("EINVAL"))],
    # the probe host's capability values: X86_DISABLE_EXITS 14 (no MWAIT), DISABLE_QUIRKS2
    # 0x5ff, X2APIC_API 15 on /dev/kvm / 11 on a VM without a split irqchip (the
    # suppress-EOI-broadcast flags of this build)
    "x86_vm_enable_cap_bookkeeping": [
        ("X86_DISABLE_EXITS 0x1", E("EINVAL")),
        ("X86_DISABLE_EXITS 0xe", ("ok", 0)),
        ("X86_DISABLE_EXITS 0x10", E("EINVAL")),
        ("X86_DISABLE_EXITS 0x0 after a vCPU", E("EINVAL")),
        ("DISABLE_QUIRKS 0x600", ("ok", 0)),
        ("DISABLE_QUIRKS2 0x5ff", ("ok", 0)),
        ("DISABLE_QUIRKS2 0x600", E("EINVAL")),
        ("X2APIC_API 0x4", E("EINVAL")),
        ("X2APIC_API 0x8", ("ok", 0)),
        ("X2APIC_API 0xc", E("EINVAL")),
        ("X2APIC_API split 0x4", ("ok", 0)),
        ("X2APIC_API split 0xc", E("EINVAL")),
        ("X86_USER_SPACE_MSR 0x7", ("ok", 0)),
        ("X86_USER_SPACE_MSR 0x8", E("EINVAL")),
        ("EXIT_ON_EMULATION_FAILURE 0x2", E("EINVAL")),
        ("MANUAL_DIRTY_LOG_PROTECT2 0x2", E("EINVAL")),
        ("MANUAL_DIRTY_LOG_PROTECT2 0x3", ("ok", 0)),
        ("HALT_POLL 0xffffffff", ("ok", 0)),
        ("HALT_POLL 0x100000000", E("EINVAL")),
        ("MSR_PLATFORM_INFO 0x8000000000000000", ("ok", 0)),
        ("X86_DISABLE_EXITS 0 on /dev/kvm", E("EINVAL")),
    ],
    # no TSS_PRIVATE_MEMSLOT: the host's vendor module (PVM; VMX with unrestricted guest
    # and SVM alike) keeps no memslot for the TSS
    "x86_vm_tss_identity_map": [("memslot over the TSS pages (no userspace memory)", ("ok", 0))],
    "x86_vm_irqchip": [
        ("CHECK_EXTENSION(X2APIC_API), full irqchip", ("ok", 11)),
        ("VM 3: CHECK_EXTENSION(X2APIC_API)", ("ok", 11)),
        ("VM 3: CHECK_EXTENSION(X2APIC_API), split", ("ok", 15)),
        ("CHECK_EXTENSION(X2APIC_API) on /dev/kvm", ("ok", 15)),
    ],
    # a kernel built without CONFIG_KVM_HYPERV and CONFIG_KVM_XEN (KVM_CAP_HYPERV_SYNIC and
    # KVM_CAP_XEN_HVM are 0): kvm_set_routing_entry has no HV_SINT / XEN_EVTCHN case
    "eventfds_gsi_routing": [
        ('type HV_SINT', E("EINVAL")),
        ('type XEN_EVTCHN port 0', E("EINVAL")),
        ('type XEN_EVTCHN port 1024', E("EINVAL")),
        ('type XEN_EVTCHN priority 1', E("EINVAL")),
    ],
}


# the probe host's vendor module (kvm_pvm): supported_mce_cap is x86.c's MCG_CTL_P |
# MCG_SER_P (VMX adds LMCE_P | CMCI_P), no MSR_IA32_MCG_EXT_CTL (vmx_get_msr has it);
# XCR0 of an AVX-512 host with PKRU; no vendor dev_get_attr (VMX: none either; SVM
# answers group 1 when SEV is enabled)
HOST_SPECIFIC.update({
    "x86_mce_setup": [
        ("supported mce cap", ("ok", 0x1000100)),
        ("GET_MSRS P5_MC_ADDR/TYPE, MCG_CAP/STATUS/CTL/EXT_CTL", ("ok", 5)),
    ],
    "x86_dev_attr": [
        ("value", ("ok", "0x2e7")),
        ("GET_DEVICE_ATTR flags=0x0 group=0x1 attr=0x0", E("ENXIO")),
    ],
})


# the in-kernel PIC / I/O APIC state and the PIT (kmock.testing.conformance_x86_vm):
# x86.c kvm_arch_vm_ioctl (memdup_user, then irqchip_full: ENXIO; create_pit: EEXIST,
# ENOENT; the PIT ioctls' copy / vpit order), irq.c kvm_vm_ioctl_get/set_irqchip (EINVAL),
# i8259.c pic_set_irq1 (IMR: -1; ELCR: level), ioapic.c ioapic_set_irq / ioapic_service /
# kvm_get_ioapic / kvm_set_ioapic (RTC coalescing), i8254.c kvm_pit_reset / pit_load_count /
# kvm_vm_ioctl_get/set_pit2
REFERENCE.update({
    "x86_irqchip_state": [
        ("no irqchip: GET master", E("ENXIO")),
        ("no irqchip: GET NULL", E("EFAULT")),
        ("split: GET I/O APIC", E("ENXIO")),
        ("reset: GET chip 0x3", E("EINVAL")),
        ("SET chip 3", E("EINVAL")),
        ("master 0: gsi 1 level 1: status", ("ok", -1)),
        ("master 4: gsi 3 level 1: status", ("ok", 0)),
        ("master 5: gsi 3 level 0: status", ("ok", 2)),
        ("all masked: gsi 5: status", ("ok", -1)),
        ("I/O APIC: gsi 16 raise: status", ("ok", 1)),
        ("I/O APIC: gsi 17 raise again: status", ("ok", -1)),
        ("I/O APIC: gsi 17 raise after lowering: status", ("ok", -1)),
        ("I/O APIC: gsi 23 raise: status", ("ok", -1)),
        ("RTC: gsi 8 raise again (EOI pending): status", ("ok", 0)),
        ("after SET: RTC raise (vector 0x58): status", ("ok", 2)),
        ("SET chip 7 after all this", E("EINVAL")),
    ],
    "x86_pit": [
        ("no irqchip: CREATE_PIT2", E("ENOENT")),
        ("no irqchip: CREATE_PIT2 NULL", E("EFAULT")),
        ("no PIT: GET_PIT2 NULL", E("ENXIO")),
        ("no PIT: SET_PIT2 NULL", E("EFAULT")),
        ("no PIT: GET_PIT NULL", E("EFAULT")),
        ("no PIT: REINJECT_CONTROL", E("ENXIO")),
        ("split: CREATE_PIT2", E("ENOENT")),
        ("CREATE_PIT2 flags 0xffffffff, pad set", ("ok", 0)),
        ("CREATE_PIT2 again", E("EEXIST")),
        ("CREATE_PIT after CREATE_PIT2", E("EEXIST")),
        ("reset: GET_PIT2: channel 0 count_load_time", ("ok", 0)),
        ("reset: GET_PIT2: channel 1 count_load_time is the SET's / CREATE's time", ("ok", True)),
        ("after SET_PIT2: GET_PIT2: channel 0 count_load_time", ("ok", 1000)),
        ("after SET_PIT2: GET_PIT2: flags, reserved", ("ok", (0xFFFFFFF0, (0,) * 9))),
        ("legacy: CREATE_PIT after a vCPU", ("ok", 0)),
    ],
})

# x86.c kvm_vcpu_ioctl_interrupt (kvm_queue_interrupt / pic_in_kernel / pending_external_vector),
# kvm_vcpu_ioctl_x86_get_vcpu_events; kvm_vcpu_ioctl_device_attr -> kvm_arch_tsc_has/get/set_attr;
# kvm_arch_vcpu_ioctl_translate (nonpaging_gva_to_gpa, INVALID_GPA); kvm_vcpu_ioctl_set_cpuid
# -> kvm_set_cpuid / kvm_check_cpuid; kvm_get_set_one_reg, kvm_get_reg_list (6.18 x86 ONE_REG)
REFERENCE.update({
    "x86_vcpu_interrupt": [
        ("none: INTERRUPT 0x100", E("EINVAL")),
        ("none: INTERRUPT 0x21", ("ok", 0)),
        ("none: interrupt injected, nr, soft", ("ok", (1, 0x21, 0))),
        ("none: interrupt_bitmap", ("ok", (1 << 0x21, 0, 0, 0))),
        ("irqchip: INTERRUPT 0x20", E("ENXIO")),
        ("irqchip: interrupt injected, nr, soft", ("ok", (0, 0, 0))),
        ("split: INTERRUPT 0x20", ("ok", 0)),
        ("split: INTERRUPT 0x21", E("EEXIST")),
        ("split: interrupt injected, nr, soft", ("ok", (0, 0, 0))),
        ("NULL", E("EFAULT")),
    ],
    "x86_vcpu_tsc_attr": [
        ("HAS group 0 attr 0 flags 0", ("ok", 0)),
        ("HAS group 0 attr 0 flags 1", ("ok", 0)),
        ("HAS group 0 attr 1 flags 0", E("ENXIO")),
        ("GET group 1 attr 0 flags 0", E("ENXIO")),
        ("GET bad addr", E("EFAULT")),
        ("SET bad addr", E("EFAULT")),
        ("SET offset 2^40", ("ok", 0)),
        ("GET after SET: 2^40 (a writable TSC) or the offset before", ("ok", True)),
        ("guest TSC follows the GET offset", ("ok", True)),
    ],
    "x86_vcpu_translate": [
        ("TRANSLATE 0x12345678", ("ok", 0)),
        ("0x12345678: gpa, valid, writeable, usermode", ("ok", ("0x12345678", 1, 1, 0))),
        ("0xffffffff12345678: gpa, valid, writeable, usermode",
         ("ok", ("0xffffffff12345678", 1, 1, 0))),
        ("0xffffffffffffffff: gpa, valid, writeable, usermode",
         ("ok", ("0xffffffffffffffff", 0, 1, 0))),
        ("TRANSLATE NULL", E("EFAULT")),
    ],
    "x86_vcpu_set_cpuid_legacy": [
        ("NULL", E("EFAULT")),
        ("nent 257", E("E2BIG")),
        ("width 40", E("EINVAL")),
        ("two entries", ("ok", 0)),
        ("GET_CPUID2 entries", ("ok", ((0, 0, 0, 1, 2, 3, 4), (0x80000001, 0, 0, 5, 6, 7, 8)))),
        ("zero entries", ("ok", 0)),
    ],
    "x86_vcpu_one_reg": [
        ("GET PAT", ("ok", 0)),
        ("PAT value", ("ok", "0x7040600070406")),
        ("GET unknown MSR", E("EINVAL")),
        ("GET GUEST_SSP", E("EINVAL")),
        ("GET size u32", E("EINVAL")),
        ("GET rsvd1", E("EINVAL")),
        ("GET type 1", E("EINVAL")),
        ("GET arm64 arch", E("EINVAL")),
        ("GET PAT bad addr", E("EFAULT")),
        ("SET PAT bad addr", E("EFAULT")),
        ("SET PAT all WB", ("ok", 0)),
        ("PAT after", ("ok", "0x606060606060606")),
        ("GET_REG_LIST n=0", ("ok", 0)),
        ("n=4: n written", ("ok", 0)),
        ("GET_REG_LIST NULL", E("EFAULT")),
    ],
})

# KVM_CREATE_DEVICE and the kvm-vfio device (kmock.testing.conformance_x86_devices):
# kvm_main.c kvm_vm_ioctl (copy_from_user: EFAULT), kvm_ioctl_create_device (no ops for the
# type: ENODEV; KVM_CREATE_DEVICE_TEST: 0; other flags ignored), kvm_device_ioctl (mm check:
# EIO; no ops->ioctl: ENOTTY), kvm_device_ioctl_attr (no accessor: EPERM before the copy),
# kvm_device_release (ops->release at close); virt/kvm/vfio.c kvm_vfio_create (EBUSY),
# kvm_vfio_has_attr, kvm_vfio_set_attr / kvm_vfio_set_file (ENXIO, get_user: EFAULT),
# kvm_vfio_file_add (fget: EBADF, vfio_file_is_valid: EINVAL), kvm_vfio_file_del (ENOENT)
REFERENCE.update({
    "x86_create_device": [
        ("KVM_CREATE_DEVICE on /dev/kvm", E("EINVAL")),  # kvm_arch_dev_ioctl default
        ("KVM_CHECK_EXTENSION(DEVICE_CTRL) on the VM", ("ok", 1)),
        ("KVM_CREATE_DEVICE NULL", E("EFAULT")),
        ("type 0x0", E("ENODEV")),
        ("type 0x0 TEST", E("ENODEV")),
        ("type 0x7 TEST", E("ENODEV")),  # the arm64 vGIC: not registered on x86
        ("type 0xffffffff", E("ENODEV")),
        ("VFIO TEST", ("ok", 0)),
        ("VFIO TEST leaves fd untouched", ("ok", True)),
        ("VFIO flags 0xfffffffe", ("ok", 0)),
        ("fstat device fd", ("ok", ("stat", 0o600, 0, P, 0, 1))),  # an anon inode
        ("second VFIO", E("EBUSY")),
        ("second VFIO TEST", ("ok", 0)),
        ("VM 2: VFIO", ("ok", 0)),
        ("VFIO after the close", ("ok", 0)),
    ],
    "x86_kvm_vfio_attrs": [
        ("HAS NULL", E("EFAULT")),
        ("HAS group 1 attr 0x1 flags 0xff", ("ok", 0)),
        ("HAS group 1 attr 0x2 flags 0xff", ("ok", 0)),
        ("HAS group 1 attr 0x3 flags 0xff", E("ENXIO")),  # SPAPR_TCE: PowerPC only
        ("HAS group 1 attr 0x100000001 flags 0xff", E("ENXIO")),
        ("HAS group 0 attr 0x1 flags 0xff", E("ENXIO")),
        ("GET NULL", E("EPERM")),
        ("GET FILE/ADD", E("EPERM")),
        ("SET NULL", E("EFAULT")),
        ("SET group 1 attr 0x3", E("ENXIO")),
        ("SET group 2 attr 0x1", E("ENXIO")),
        ("ADD addr NULL", E("EFAULT")),
        ("DEL addr NULL", E("EFAULT")),
        ("FILE_ADD -1", E("EBADF")),
        ("FILE_ADD a closed fd", E("EBADF")),
        ("FILE_DEL a closed fd", E("EBADF")),
        ("FILE_ADD /dev/null", E("EINVAL")),
        ("FILE_DEL /dev/null", E("ENOENT")),
        ("FILE_ADD an eventfd", E("EINVAL")),
        ("FILE_ADD the VM", E("EINVAL")),
        ("FILE_ADD the device itself", E("EINVAL")),
        ("FILE_DEL the device itself", E("ENOENT")),
        ("GROUP_ADD (legacy name) /dev/null", E("EINVAL")),
        ("KVM_CREATE_VCPU on the device fd", E("ENOTTY")),
        ("HAS FILE/ADD from a forked child", E("EIO")),
        ("HAS FILE/ADD with the VM fd closed", ("ok", 0)),  # the device holds the VM
    ],
})

# KVM_SET_PMU_EVENT_FILTER, KVM_GET_EMULATED_CPUID, KVM_RESET_DIRTY_RINGS
# (kmock.testing.conformance_x86_vm_misc): pmu.c kvm_vm_ioctl_set_pmu_event_filter (header
# EFAULT, action, flags, nevents > 300 E2BIG, events, prepare_filter_lists /
# is_masked_filter_valid; no vPMU check), kvm_arch_dev_ioctl's and kvm_arch_vcpu_ioctl's
# default EINVAL, kvm_arch_vm_ioctl's ENOTTY; cpuid.c kvm_dev_ioctl_get_cpuid (nent < 1
# E2BIG, cap 256, sanity_check_entries EINVAL, __do_cpuid_func_emulated's E2BIG before
# every function: one spare entry; nothing copied back on error); kvm_main.c
# kvm_vm_ioctl_reset_dirty_pages (no dirty_ring_size: EINVAL)
REFERENCE.update({
    "x86_pmu_event_filter": [
        ("CHECK_EXTENSION(PMU_EVENT_FILTER)", ("ok", 1)),
        ("CHECK_EXTENSION(PMU_EVENT_MASKED_EVENTS)", ("ok", 1)),
        ("on /dev/kvm", E("EINVAL")),
        ("NULL", E("EFAULT")),
        ("allow, no events", ("ok", 0)),
        ("deny, no events", ("ok", 0)),
        ("action 0x2", E("EINVAL")),
        ("masked flag, no events", ("ok", 0)),
        ("flags 0x2", E("EINVAL")),
        ("nevents 300", ("ok", 0)),
        ("nevents 0x12d", E("E2BIG")),
        ("nevents 0xffffffff", E("E2BIG")),
        ("action 2 and nevents 301", E("EINVAL")),
        ("flags 2 and nevents 301", E("EINVAL")),
        ("masked junk and nevents 301", E("E2BIG")),
        ("pads set", ("ok", 0)),
        ("fixed bitmap 0xffffffff, no events", ("ok", 0)),
        ("unmasked: bit 63 and bit 32 events kept or dropped", ("ok", 0)),
        ("masked: select/match/mask/exclude", ("ok", 0)),
        ("masked: bit 16", E("EINVAL")),
        ("masked: bit 36", E("EINVAL")),
        ("masked: bit 54", E("EINVAL")),
        ("masked: second of two bad", E("EINVAL")),
        ("masked: bad entry beyond nevents", ("ok", 0)),
        ("after a vCPU", ("ok", 0)),
        ("on a vCPU", E("EINVAL")),
    ],
    "x86_emulated_cpuid": [
        ("CHECK_EXTENSION(EXT_EMUL_CPUID)", ("ok", 1)),
        ("NULL", E("EFAULT")),
        ("nent 0", E("E2BIG")),
        ("nent 3", E("E2BIG")),
        ("nent 3: buffer unchanged", ("ok", True)),
        ("nent 0x4", ("ok", 0)),
        ("nent 0x4: nent after", ("ok", 3)),
        ("nent 0x4: header padding kept", ("ok", 0xABCD)),
        ("nent 0x4: leaves 0 and 1", ("ok", "00" * 12 + "07" + "00" * 27
                                      + "01" + "00" * 19 + "00004000" + "00" * 16)),
        ("nent 0x4: leaf 7 (function, index, flags, eax, ebx, edx)", ("ok", (7, 0, 1, 0, 0, 0))),
        ("nent 0x4: leaf 7 ECX is RDPID iff the supported CPUID has RDTSCP", ("ok", True)),
        ("nent 0xffffffff: nent after", ("ok", 3)),
        ("nent 4, entry 1 padding set", E("EINVAL")),
        ("nent 2, entry 1 padding set (EINVAL before E2BIG)", E("EINVAL")),
        ("nent 4, entry 4 padding set (not checked)", ("ok", 0)),
        ("nent 0xffffffff, entry 255 padding set", E("EINVAL")),
        ("nent 0, entry 0 padding set (E2BIG first)", E("E2BIG")),
        ("on a VM", E("ENOTTY")),
    ],
    "x86_dirty_ring_reset": [
        ("CHECK_EXTENSION(DIRTY_LOG_RING) on /dev/kvm", ("ok", 65536 * 16)),
        ("CHECK_EXTENSION(DIRTY_LOG_RING_ACQ_REL) on /dev/kvm", ("ok", 65536 * 16)),
        ("on /dev/kvm", E("EINVAL")),
        ("no ring", E("EINVAL")),
        ("no ring, argument 0x1234", E("EINVAL")),
        ("no ring, after a vCPU", E("EINVAL")),
        ("on a vCPU", E("EINVAL")),
    ],
})

# kvm_pmu_ops.EVENTSEL_EVENT of the probe host's vendor module: Intel's (event select bits
# 35:32 are AMD's only), so a masked entry with bit 32 fails is_masked_filter_valid
# x86.c kvm_set_msr_common: kvm_pv_enable_async_pf (bits 5:4 reserved; without an in-kernel
# LAPIC only 0), kvm_pv_enable_async_pf_int (data >> 8 refused; no LAPIC refused)
REFERENCE.update({
    "x86_pv_msrs_lapic": [
        ("no irqchip: SET 0x4b564d02 = 0x1", ("ok", 0)),
        ("no irqchip: SET 0x4b564d06 = 0x0", ("ok", 0)),
        ("split irqchip: SET 0x4b564d02 = 0x1001", ("ok", 1)),
        ("split irqchip: SET 0x4b564d02 = 0x10", ("ok", 0)),
        ("split irqchip: SET 0x4b564d06 = 0xec", ("ok", 1)),
        ("split irqchip: SET 0x4b564d06 = 0x100", ("ok", 0)),
        ("full irqchip: SET 0x4b564d06 = 0xec", ("ok", 1)),
        ("full irqchip: 0x4b564d06 reads", ("ok", "0xec")),
    ],
})

# the ioctl sweep (kmock.testing.conformance_sweep): a few of its rows, each decided by the
# dispatch or the first check of a zeroed argument (kvm_main.c kvm_vm_ioctl_reset_dirty_pages,
# kvm_ioctl_create_device, cpuid.c kvm_dev_ioctl_get_cpuid, x86.c kvm_arch_vcpu_ioctl)
REFERENCE.update({
    "ioctl_sweep": [
        ("KVM_RESET_DIRTY_RINGS on vm", E("EINVAL")),
        ("KVM_CREATE_DEVICE on vm", E("ENODEV")),
        ("KVM_GET_EMULATED_CPUID on dev", E("E2BIG")),
        ("KVM_GET_SUPPORTED_CPUID on vm", E("ENOTTY")),
        ("KVM_CHECK_EXTENSION on vcpu", E("EINVAL")),
    ],
    # x86.c kvm_vm_ioctl_enable_cap (KVM_CAP_X86_BUS_LOCK_EXIT: modes OFF|EXIT, not both,
    # not gated on the capability) and kvm_vcpu_ioctl_enable_cap (flags EINVAL;
    # KVM_CAP_ENFORCE_PV_FEATURE_CPUID takes any args[0]; the rest EINVAL)
    "enable_cap_sweep": [
        ("cap 190 on vcpu, args[0] 1", ("ok", 0)),
        ("cap 193 on vm, args[0] 1", ("ok", 0)),
        ("cap 190 on vm, args[0] 1", E("EINVAL")),
        ("BUS_LOCK_EXIT 0x3", E("EINVAL")),
        ("BUS_LOCK_EXIT 0x4", E("EINVAL")),
        ("BUS_LOCK_EXIT flags 1", E("EINVAL")),
        ("BUS_LOCK_EXIT after a vCPU", ("ok", 0)),
        ("BUS_LOCK_EXIT on the vCPU", E("EINVAL")),
        ("ENFORCE_PV_FEATURE_CPUID 0xffffffffffffffff", ("ok", 0)),
        ("ENFORCE_PV_FEATURE_CPUID flags 1", E("EINVAL")),
    ],
})

# arch/x86/kvm/x86.c kvm_arch_vcpu_ioctl KVM_MEMORY_ENCRYPT_OP: ENOTTY without the vendor's
# vcpu_mem_enc_ioctl; the probe host's VMX is built without CONFIG_KVM_INTEL_TDX (an
# upstream-config Intel kernel answers EINVAL: vt_vcpu_mem_enc_ioctl, !is_td_vcpu)
HOST_SPECIFIC.update({
    "x86_vcpu_mem_enc_op": [
        ("on the vCPU", E("ENOTTY")),
        ("on the vCPU, NULL", E("ENOTTY")),
        ("on the VM", E("ENOTTY")),
    ],
})

HOST_SPECIFIC.update({
    "x86_pmu_event_filter": [
        ("masked: event select bit 32 (Intel refuses it)", E("EINVAL")),
    ],
})


# the dirty ring (kmock.kvm.dirty_ring). kvm_main.c kvm_vm_ioctl_enable_cap_generic (the ring
# caps: no flags check), kvm_vm_ioctl_enable_dirty_log_ring (u32 size: power of two, >= a page
# and the reserved entries EINVAL, > KVM_DIRTY_RING_MAX_ENTRIES * 16 E2BIG, set once EINVAL,
# vCPUs created EINVAL); DIRTY_LOG_RING_WITH_BITMAP needs CONFIG_NEED_KVM_DIRTY_RING_WITH_BITMAP
# (arm64 only): EINVAL; kvm_get_dirty_log_protect / kvm_clear_dirty_log_protect
# (!kvm_use_dirty_bitmap: ENXIO first); kvm_vcpu_mmap + kvm_page_in_dirty_ring (first or last
# page in the ring and not VM_SHARED: EINVAL; PROT_EXEC is refused by do_mmap, EPERM, the anon
# inode's noexec mount); kvm_vm_ioctl_reset_dirty_pages + dirty_ring.c kvm_dirty_ring_reset;
# mark_page_dirty_in_slot -> kvm_dirty_ring_push (slot as_id << 16 | id, offset from the slot)
REFERENCE.update({
    "dirty_ring_enable": [
        ("CHECK_EXTENSION(DIRTY_LOG_RING_WITH_BITMAP) on /dev/kvm", ("ok", 0)),
        ("size 0x0", E("EINVAL")),
        ("size 0x10", E("EINVAL")),
        ("size 0x400", E("EINVAL")),
        ("size 0xfff", E("EINVAL")),
        ("size 0x1010", E("EINVAL")),
        ("size 0x3000", E("EINVAL")),
        ("size 0x100000", ("ok", 0)),
        ("size 0x200000", E("E2BIG")),
        ("size 0x80000000", E("E2BIG")),
        ("size 0x100000000", E("EINVAL")),
        ("ACQ_REL 4096 again", E("EINVAL")),
        ("then RING 4096", E("EINVAL")),
        ("then RING 8192", E("EINVAL")),
        ("then RING 0", E("EINVAL")),
        ("WITH_BITMAP after the ring", E("EINVAL")),
        ("reset, ring but no vCPU", ("ok", 0)),
        ("then ACQ_REL 8192", E("EINVAL")),
        ("flags 1, WITH_BITMAP", E("EINVAL")),
        ("WITH_BITMAP without a ring", E("EINVAL")),
        ("after a vCPU: RING 4096", E("EINVAL")),
        ("after a vCPU: RING 3000", E("EINVAL")),
        ("after a vCPU: reset (no ring)", E("EINVAL")),
        ("KVM_GET_DIRTY_LOG with a ring", E("ENXIO")),
        ("KVM_GET_DIRTY_LOG with a ring, bad slot", E("ENXIO")),
        ("KVM_CLEAR_DIRTY_LOG with a ring", E("ENXIO")),
        ("reset, two empty rings", ("ok", 0)),
        ("reset, argument 0x1234", ("ok", 0)),
    ],
    "dirty_ring_mmap": [
        ("no ring: offset 64 pages, MAP_PRIVATE", ("ok", ("mapping", 4096))),
        ("no ring: offset 64 pages, PROT_EXEC", E("EPERM")),
        ("ring, MAP_SHARED RW", ("ok", ("mapping", 8192))),
        ("fresh ring: all zero", ("ok", True)),
        ("ring, MAP_SHARED PROT_READ", ("ok", ("mapping", 8192))),
        ("ring, MAP_PRIVATE", E("EINVAL")),
        ("ring, MAP_PRIVATE PROT_READ", E("EINVAL")),
        ("ring, PROT_EXEC", E("EPERM")),
        ("ring second page, MAP_PRIVATE", E("EINVAL")),
        ("page 63 + ring's first, MAP_PRIVATE", E("EINVAL")),
        ("past the ring, MAP_PRIVATE", ("ok", ("mapping", 4096))),
        ("pages 0..66 (spans the ring), MAP_PRIVATE", ("ok", ("mapping", 274432))),
        ("twice the ring, MAP_SHARED", ("ok", ("mapping", 16384))),
        ("reset, one empty ring", ("ok", 0)),
    ],
    "dirty_ring_guest_write": [
        ("KVM_RUN", ("ok", 0)),
        ("exit_reason", ("ok", 5)),  # KVM_EXIT_HLT
        ("ring after the write", ("ok", ((1, 1, 1), (0, 0, 0)))),
        ("reset, nothing harvested", ("ok", 0)),
        ("ring after the reset of nothing", ("ok", ((1, 1, 1), (0, 0, 0)))),
        ("reset, entry 0 harvested", ("ok", 1)),
        ("ring after the reset", ("ok", ((0, 1, 1), (0, 0, 0)))),
        ("reset again", ("ok", 0)),
        ("KVM_GET_DIRTY_LOG", E("ENXIO")),
    ],
})

# the smallest ring: kvm_dirty_ring_get_rsvd_entries is 64 + kvm_cpu_dirty_log_size(); the
# probe host has no PML (0: 4096 bytes accepted), a VMX host with PML adds 512 (16384 minimum)
HOST_SPECIFIC.update({
    "dirty_ring_enable": [
        ("size 0x1000", ("ok", 0)),
        ("size 0x2000", ("ok", 0)),
        ("ACQ_REL 4096", ("ok", 0)),
        ("flags 1, 4096", ("ok", 0)),
    ],
})


# KVM_TRANSLATE in long mode (kmock.kvm.x86_paging): kvm_arch_vcpu_ioctl_translate ->
# kvm_mmu_gva_to_gpa_system -> paging_tmpl.h FNAME(walk_addr_generic) with access 0: tables read
# through the memslot's hva (none: INVALID_GPA), not present or a reserved bit
# (__reset_rsvds_bits_mask: bit 63 without EFER.NXE, PS in a PML4E) fails, address bits above
# 47 unused; FNAME(update_accessed_dirty_bits) sets A (not D) on every entry of a successful walk
# except in a read-only memslot (pte_writable) and marks the table page dirty
# (kvm_vcpu_mark_page_dirty); the ioctl itself always returns 0 (valid = gpa != INVALID_GPA)
REFERENCE.update({
    "x86_vcpu_translate_paging": [
        ("SET_SREGS long mode, no NXE", ("ok", 0)),
        ("4K page: gpa, valid", ("ok", ("0x123abc", 1))),
        ("4K page, non-canonical alias (bit 48): gpa, valid", ("ok", ("0x123abc", 1))),
        ("not present PTE: gpa, valid", ("ok", ("0xffffffffffffffff", 0))),
        ("NX PTE: gpa, valid", ("ok", ("0xffffffffffffffff", 0))),
        ("A bits after the 4K walk (PML4[0], PDPT[0], PD[2], PT[5])",
         ("ok", ("0x2023", "0x3023", "0x4023", "0x123023"))),
        ("PT[7] (NX, refused) untouched", ("ok", "0x8000000000124003")),
        ("dirty pages: the tables whose entries got the A bit", ("ok", (1, 2, 3, 4))),
        ("2M page: gpa, valid", ("ok", ("0x201234", 1))),
        ("table outside memslots: gpa, valid", ("ok", ("0xffffffffffffffff", 0))),
        ("1G page: valid iff the CPUID has 1G pages", ("ok", True)),
        ("PS in a PML4E: gpa, valid", ("ok", ("0xffffffffffffffff", 0))),
        ("user page: gpa, valid", ("ok", ("0x125010", 1))),
        ("PT[7] after its walk with NXE", ("ok", "0x8000000000124023")),
        ("PD[3] (2M) after its walk", ("ok", "0x2000a3")),
        ("PD[5] (its table has no memslot) after", ("ok", "0x10000003")),
        ("PML4[1] (reserved PS) after", ("ok", "0x2083")),
        ("table in a read-only memslot: gpa, valid", ("ok", ("0x126000", 1))),
        ("PD[8] and PT_RO[0] after (no A bit written to read-only memory)",
         ("ok", ("0x800023", "0x126003"))),
        ("4K page after the PTE changed: gpa, valid", ("ok", ("0x321abc", 1))),
        ("user walk entries after (PML4[2], PDPT[3], PD[7], PT_U[1])",
         ("ok", ("0x2027", "0x3027", "0x5027", "0x125027"))),
    ],
})

# the probe host's supported CPUID has neither 1G pages nor SMAP (a PVM host); it reports LA57
# but its KVM_SET_SREGS refuses CR4.LA57 (EINVAL: the host profile's probed cr4_allowed)
HOST_SPECIFIC.update({
    "x86_vcpu_translate_paging": [
        ("CPUID has 1G pages", ("ok", False)),
        ("CPUID has SMAP", ("ok", False)),
        ("CPUID has LA57", ("ok", True)),
        ("SET_SREGS with CR4.LA57", E("EINVAL")),
        ("PDPT[1] (1G) after", ("ok", "0x40000083")),
    ],
})


# the LAPIC's interrupt state (kmock.kvm.x86_lapic.accept_vector, kmock.kvm.x86_irq.accepted_by):
# lapic.c __apic_accept_irq (APIC_DM_FIXED / LOWEST: apic_enabled, TMR by trig_mode,
# kvm_lapic_set_irr; APIC_DM_NMI: kvm_inject_nmi), irq_comm.c kvm_set_msi_irq (level is always 1,
# trig_mode from the data's bit 15), x86.c process_nmi (at most 2 pending) for
# kvm_vcpu_ioctl_x86_get_vcpu_events, kvm_apic_set_state (KVM_SET_LAPIC: the page as given)
REFERENCE.update({
    "x86_lapic_irr": [
        ('split, fresh: IRR', ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, fresh: TMR', ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, fresh: nmi pending, injected', ('ok', (0, 0))),
        ('split: MSI 0x30 to a disabled LAPIC', ('ok', 0)),
        ('split, SVR disabled: IRR',
         ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, SVR disabled: TMR',
         ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, SVR disabled: nmi pending, injected', ('ok', (0, 0))),
        ('split: MSI 0x30 edge', ('ok', 1)),
        ('split: MSI 0x30 edge again', ('ok', 1)),
        ('split: MSI 0x41 level assert', ('ok', 1)),
        ('split: MSI 0x42 level deassert', ('ok', 1)),
        ('split: MSI 0xff lowest priority', ('ok', 1)),
        ('split: MSI 0x10 (a vector under 16)', ('ok', 1)),
        ('split: MSI 0x41 edge (TMR cleared)', ('ok', 1)),
        ('split: MSI 0x77 logical, LDR 0 (nobody)', ('ok', 0)),
        ('split, after fixed MSIs: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('split, after fixed MSIs: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, after fixed MSIs: nmi pending, injected', ('ok', (0, 0))),
        ('split: MSI NMI', ('ok', 1)),
        ('split, after an NMI: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('split, after an NMI: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, after an NMI: nmi pending, injected', ('ok', (1, 0))),
        ('split: MSI NMI again', ('ok', 1)),
        ('split, after two NMIs: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('split, after two NMIs: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, after two NMIs: nmi pending, injected', ('ok', (2, 0))),
        ('split, after KVM_NMI: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('split, after KVM_NMI: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, after KVM_NMI: nmi pending, injected', ('ok', (2, 0))),
        ('split, after SET_LAPIC: IRR',
         ('ok', ('0x0', '0x0', '0x0', '0x20', '0x0', '0x0', '0x0', '0x0'))),
        ('split, after SET_LAPIC: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('split, after SET_LAPIC: nmi pending, injected', ('ok', (2, 0))),
        ('kernel, fresh: IRR', ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, fresh: TMR', ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, fresh: nmi pending, injected', ('ok', (0, 0))),
        ('kernel: MSI 0x30 to a disabled LAPIC', ('ok', 0)),
        ('kernel, SVR disabled: IRR',
         ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, SVR disabled: TMR',
         ('ok', ('0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, SVR disabled: nmi pending, injected', ('ok', (0, 0))),
        ('kernel: MSI 0x30 edge', ('ok', 1)),
        ('kernel: MSI 0x30 edge again', ('ok', 1)),
        ('kernel: MSI 0x41 level assert', ('ok', 1)),
        ('kernel: MSI 0x42 level deassert', ('ok', 1)),
        ('kernel: MSI 0xff lowest priority', ('ok', 1)),
        ('kernel: MSI 0x10 (a vector under 16)', ('ok', 1)),
        ('kernel: MSI 0x41 edge (TMR cleared)', ('ok', 1)),
        ('kernel: MSI 0x77 logical, LDR 0 (nobody)', ('ok', 0)),
        ('kernel, after fixed MSIs: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('kernel, after fixed MSIs: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, after fixed MSIs: nmi pending, injected', ('ok', (0, 0))),
        ('kernel: MSI NMI', ('ok', 1)),
        ('kernel, after an NMI: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('kernel, after an NMI: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, after an NMI: nmi pending, injected', ('ok', (1, 0))),
        ('kernel: MSI NMI again', ('ok', 1)),
        ('kernel, after two NMIs: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('kernel, after two NMIs: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, after two NMIs: nmi pending, injected', ('ok', (2, 0))),
        ('kernel, after KVM_NMI: IRR',
         ('ok', ('0x10000', '0x10000', '0x6', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ('kernel, after KVM_NMI: TMR',
         ('ok', ('0x0', '0x0', '0x4', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, after KVM_NMI: nmi pending, injected', ('ok', (2, 0))),
        ('kernel: IRQ_LINE_STATUS 9 up: status', ('ok', 2)),
        ("kernel, after the I/O APIC's level pin: IRR",
         ('ok', ('0x10000', '0x10000', '0x20006', '0x0', '0x0', '0x0', '0x0', '0x80000000'))),
        ("kernel, after the I/O APIC's level pin: TMR",
         ('ok', ('0x0', '0x0', '0x20004', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ("kernel, after the I/O APIC's level pin: nmi pending, injected", ('ok', (2, 0))),
        ('kernel, after SET_LAPIC: IRR',
         ('ok', ('0x0', '0x0', '0x0', '0x20', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, after SET_LAPIC: TMR',
         ('ok', ('0x0', '0x0', '0x20004', '0x0', '0x0', '0x0', '0x0', '0x0'))),
        ('kernel, after SET_LAPIC: nmi pending, injected', ('ok', (2, 0))),
    ],
})

# guest_memfd file operations and mappings (kmock.testing.conformance_gmem_fops), on gmems
# of flags 0, MMAP, INIT_SHARED and MMAP|INIT_SHARED (6.18 offers 3 on a default VM).
_GF = ("[flags 0x0]", "[flags 0x1]", "[flags 0x2]", "[flags 0x3]")
_GF_MAP = ("[flags 0x1]", "[flags 0x3]")  # GUEST_MEMFD_FLAG_MMAP
_GF_NOMAP = ("[flags 0x0]", "[flags 0x2]")
_GMEM_STAT = ("ok", (0o100600, True, P, 0, 1))  # S_IFREG|0600, size, blksize, blocks 0, nlink
REFERENCE.update({
    # fs/read_write.c: vfs_read/vfs_write without ->read/->write (FMODE_CAN_READ clear)
    # EINVAL before the count; ksys_pread64/ksys_pwrite64: pos < 0 EINVAL before fdget,
    # then no FMODE_PREAD: ESPIPE
    "gmem_fops_read_write": [("KVM_CHECK_EXTENSION(244) on VM", ("ok", 3))] + [
        (f"{t} {w}: {op}", E(e)) for t in _GF for w in ("fresh", "after data")
        for op, e in (("read 0", "EINVAL"), ("read 64", "EINVAL"), ("write b''", "EINVAL"),
                      ("write 64", "EINVAL"), ("pread 0 @0", "ESPIPE"), ("pread 64 @0", "ESPIPE"),
                      ("pread 64 @-1", "EINVAL"), ("pwrite 64 @0", "ESPIPE"),
                      ("pwrite 64 @-P", "EINVAL"))] + [
        ("[flags 0x3] write 0x5a through the mapping", OK),
        ("[flags 0x3] fstat (size unchanged)", ("ok", ("stat", 0o100600, 4 * P, P, 0, 1)))],
    # fs/read_write.c ksys_lseek: whence > SEEK_MAX EINVAL after fdget (EBADF first), then
    # vfs_llseek: no FMODE_LSEEK (no ->llseek in kvm_gmem_fops) ESPIPE for every whence
    "gmem_fops_lseek": [
        (f"{t} lseek {pos} SEEK_{w}", E("ESPIPE")) for t in _GF
        for w in ("SET", "CUR", "END", "DATA", "HOLE") for pos in ("0x0", "-0x1", "0x4000")] + [
        (f"{t} lseek 0 whence {h}", E("EINVAL")) for t in _GF for h in (5, 2147483647, -1)] + [
        ("lseek on the closed fd, whence 5 (EBADF first)", E("EBADF"))],
    # __kvm_gmem_create: i_mode |= S_IFREG, i_size = size; nothing accounts i_blocks
    "gmem_fops_fstat": [
        (f"{t} size {size:#x} {when}: (S_IFREG|0600, size, blksize 4096, blocks 0, nlink 1)",
         _GMEM_STAT) for t in _GF for size in (P, 4 * P) for when in ("fresh", "allocated", "punched")
    ] + [(f"{t} size 0x10000000000 fresh: (S_IFREG|0600, size, blksize 4096, blocks 0, nlink 1)",
          _GMEM_STAT) for t in _GF] + [
        ("[flags 0x3] size 0x4000 written: (S_IFREG|0600, size, blksize 4096, blocks 0, nlink 1)",
         _GMEM_STAT)],
    # fs/open.c do_sys_ftruncate (length < 0 EINVAL), do_truncate -> notify_change ->
    # kvm_gmem_setattr EINVAL; chmod_common -> notify_change EINVAL; fs/sync.c
    # vfs_fsync_range: no ->fsync EINVAL
    "gmem_fops_setattr": [
        (f"{t} ftruncate {n:#x}", E("EINVAL")) for t in _GF
        for n in (-1, 0, 4 * P, 2 * 4 * P, 2**63 - 1)] + [
        (f"{t} fchmod {m:#o}", E("EINVAL")) for t in _GF for m in (0o600, 0o4755)] + [
        (f"{t} fsync", E("EINVAL")) for t in _GF] + [
        ("[flags 0x3] contents kept", ("ok", ("bytes", 4 * P, ((0, 4 * P, 0x77),))))],
    # fs/open.c vfs_fallocate (len <= 0 / offset < 0 EINVAL; unknown bits, exclusive modes,
    # PUNCH without KEEP, COLLAPSE/INSERT/WRITE_ZEROES with KEEP EOPNOTSUPP; offset+len past
    # s_maxbytes or overflowing EFBIG) then kvm_gmem_fallocate (KEEP_SIZE required, nothing
    # but KEEP|PUNCH: EOPNOTSUPP)
    "gmem_fops_fallocate_modes": [
        (f"mode {m:#04x}", OK if m in (0x01, 0x03) else ENOTSUP) for m in range(256)] + [
        ("mode 0x100", ENOTSUP), ("mode -0x80000000", ENOTSUP), ("mode -0x1", ENOTSUP),
        ("mode ZERO len 0", E("EINVAL")), ("mode 0x100 off -1", E("EINVAL")),
        ("mode COLLAPSE|KEEP off 2^62 len 2^62", ENOTSUP),
        ("mode 0 off 2^62 len 2^62 (EFBIG before ->fallocate)", E("EFBIG"))],
    # the same, for ranges; kvm_gmem_fallocate: !PAGE_ALIGNED EINVAL; kvm_gmem_allocate:
    # offset + len > i_size EINVAL; kvm_gmem_punch_hole: no bounds check
    "gmem_fops_fallocate_ranges": [
        (f"{t} {mode} off {off} len {ln}", want) for t in _GF for mode, cases in (
            ("KEEP", (("0x0", "0x0", E("EINVAL")), ("-0x1000", "0x1000", E("EINVAL")),
                      ("0x1", "0x1000", E("EINVAL")), ("0x0", "0x4000", OK),
                      ("0x3000", "0x2000", E("EINVAL")), ("0x4000", "0x1000", E("EINVAL")),
                      ("0x4000000000000000", "0x4000000000000000", E("EFBIG")),
                      ("0x7fffffffffffe000", "0x1000", E("EINVAL")),
                      ("0x7ffffffffffff000", "0x1000", E("EFBIG")),
                      ("0x7fffffffffffffff", "0x1", E("EFBIG")),
                      ("0x1", "0x7ffffffffffffffe", E("EINVAL")))),
            ("KEEP|PUNCH", (("0x0", "0x0", E("EINVAL")), ("0xfff", "0x1000", E("EINVAL")),
                            ("0x3000", "0x2000", OK), ("0x20000", "0x1000", OK),
                            ("0x0", "0x4000000000000000", OK),
                            ("0x7fffffffffffe000", "0x1000", OK),
                            ("0x7ffffffffffff000", "0x2000", E("EFBIG")),
                            ("0x1000", "0x7ffffffffffff000", E("EFBIG")))))
        for off, ln, want in cases] + [
        ("[flags 0x0] 0 off 0x0 len 0x0", E("EINVAL")), ("[flags 0x0] 0 off 0x1 len 0x1000", ENOTSUP),
        ("[flags 0x0] 0 off 0x1000 len 0x7ffffffffffff000", E("EFBIG")),
        ("[flags 0x0] ZERO off 0x0 len 0x4000", ENOTSUP),
        ("[flags 0x0] PUNCH off 0x4000000000000000 len 0x4000000000000000", ENOTSUP)],
    # kvm_gmem_punch_hole -> truncate_inode_pages_range zaps the host mapping; the fault
    # (kvm_gmem_fault_user_mapping) brings back a zeroed page
    "gmem_fops_fallocate_contents": [
        ("[flags 0x3] page 1 zero, others kept",
         ("ok", ("bytes", 4 * P, ((0, P, 0x10), (P, 2 * P, 0), (2 * P, 3 * P, 0x12), (3 * P, 4 * P, 0x13))))),
        ("[flags 0x3] unchanged",
         ("ok", ("bytes", 4 * P, ((0, P, 0x10), (P, 2 * P, 0), (2 * P, 3 * P, 0x12), (3 * P, 4 * P, 0))))),
        ("[flags 0x3] page 1 rewritten",
         ("ok", ("bytes", 4 * P, ((0, P, 0x10), (P, 2 * P, 0x99), (2 * P, 3 * P, 0x12), (3 * P, 4 * P, 0)))))],
    # mm/mmap.c do_mmap: path_noexec (anon_inode_fs sets SB_I_NOEXEC) EPERM for VM_EXEC
    # before the file's ->mmap; kvm_gmem_mmap ENODEV without GUEST_MEMFD_FLAG_MMAP
    "gmem_fops_mmap_prot": [
        (f"{t} mmap prot {p}", E("EPERM")) for t in _GF for p in ("X", "RX", "RWX")] + [
        (f"{t} mmap prot {p}", E("ENODEV")) for t in _GF_NOMAP for p in ("NONE", "R", "RW")] + [
        (f"{t} mmap prot {p}", ("ok", ("mapping", 4 * P))) for t in _GF_MAP
        for p in ("NONE", "R", "W", "RW", "RW|0x10")] + [
        ("[flags 0x3] prot R: write [0]", ("exc", "TypeError")),
        ("[flags 0x3] prot W: write [0:4]", OK), ("[flags 0x1] prot W: write [0:4]", ("sigbus", 0)),
        ("[flags 0x1] prot R: read [0:8]", ("sigbus", 0))],
    # ksys_mmap_pgoff: MAP_HUGETLB on a non-hugetlbfs file EINVAL; do_mmap: MAP_SHARED drops
    # the flags outside LEGACY_MAP_MASK, MAP_SHARED_VALIDATE refuses them (no FOP_MMAP_SYNC:
    # MAP_SYNC too) with EOPNOTSUPP, bad map type EINVAL, VM_GROWSDOWN EINVAL; then
    # kvm_gmem_mmap (ENODEV; not VM_SHARED|VM_MAYSHARE: EINVAL)
    "gmem_fops_mmap_flags": [
        (f"{t} mmap {f}", ENOTSUP) for t in _GF for f in ("VALIDATE|SYNC", "VALIDATE|0x200000")] + [
        (f"{t} mmap {f}", E("EINVAL")) for t in _GF
        for f in ("DROPPABLE", "type 0", "type 4", "type 0xf", "SHARED|HUGETLB", "SHARED|GROWSDOWN")] + [
        (f"{t} mmap {f}", E("ENODEV")) for t in _GF_NOMAP
        for f in ("SHARED", "SHARED|SYNC", "PRIVATE", "VALIDATE|ABOVE4G")] + [
        (f"{t} mmap PRIVATE", E("EINVAL")) for t in _GF_MAP] + [
        (f"{t} mmap {f}", ("ok", ("mapping", 4 * P))) for t in _GF_MAP
        for f in ("SHARED", "SHARED_VALIDATE", "SHARED|SYNC", "SHARED|0x200000", "SHARED|POPULATE",
                  "SHARED|LOCKED", "VALIDATE|POPULATE|LOCKED", "VALIDATE|ABOVE4G",
                  "VALIDATE|32BIT|NORESERVE", "VALIDATE|HUGE_2MB (no HUGETLB)")] + [
        ("[flags 0x1] SHARED|POPULATE: read [0:8]", ("sigbus", 0))],
    # arch/x86/kernel/sys_x86_64.c sys_mmap: off & ~PAGE_MASK EINVAL; do_mmap: !len EINVAL,
    # PAGE_ALIGN(len) == 0 ENOMEM, __get_unmapped_area len > TASK_SIZE ENOMEM, then
    # file_mmap_ok (S_ISREG: MAX_LFS_FILESIZE) EOVERFLOW; kvm_gmem_fault_user_mapping:
    # SIGBUS at or past i_size and on non-INIT_SHARED pages
    "gmem_fops_mmap_ranges": [
        (f"{t} mmap {n}", E(e)) for t in _GF for n, e in (
            ("offset 100", "EINVAL"), ("offset -1", "EINVAL"), ("length 0", "EINVAL"),
            ("offset 2^63-P", "EOVERFLOW"), ("length 2P at 2^63-2P", "EOVERFLOW"),
            ("offset -P", "EOVERFLOW"), ("length 2^47", "ENOMEM"), ("length 2^64-P", "ENOMEM"),
            ("length 2^64-1", "ENOMEM"),
            ("length 2^47 at 2^63-P (ENOMEM before EOVERFLOW)", "ENOMEM"),
            ("length 0 at offset 100 (alignment first)", "EINVAL"))] + [
        (f"{t} mmap {n}", E("ENODEV")) for t in _GF_NOMAP
        for n in ("length 1", "offset = size", "offset 2^63-2P")] + [
        (f"{t} mmap offset 2^63-2P", ("ok", ("mapping", P))) for t in _GF_MAP] + [
        ("[flags 0x3] length 1: read [0]", ("ok", 0)), ("[flags 0x1] length 1: read [0]", ("sigbus", 0)),
        ("[flags 0x3] offset = size: read [0]", ("sigbus", 0)),
        ("[flags 0x3] length P+1: write [len-1]", OK)],
    # ksys_mmap_pgoff: with MAP_ANONYMOUS the fd is not looked at
    "gmem_fops_mmap_anonymous": [
        (f"{t} mmap SHARED|ANONYMOUS", ("ok", ("mapping", P))) for t in _GF] + [
        (f"{t} mmap PRIVATE|ANONYMOUS RWX", ("ok", ("mapping", P))) for t in _GF] + [
        (f"{t} anonymous: read", ("ok", ("bytes", P, ((0, P, 0x42),)))) for t in _GF] + [
        ("[flags 0x3] the file's page is still zero", ("ok", ("bytes", P, ((0, P, 0),))))],
    # the same do_mmap / ksys_mmap_pgoff checks on other files: /dev/kvm has no ->mmap
    # (kvm_chardev_ops; /dev is not noexec on the probe host), a VM fd none either
    # (kvm_vm_fops) on the noexec anon_inode mount, a vCPU fd has kvm_vcpu_mmap
    "gmem_fops_mmap_other_files": [
        ("/dev/kvm: mmap P RW SHARED", E("ENODEV")), ("/dev/kvm: mmap P GROWSDOWN", E("ENODEV")),
        ("/dev/kvm: mmap P VALIDATE|SYNC", ENOTSUP), ("/dev/kvm: mmap P HUGETLB", E("EINVAL")),
        ("VM: mmap P RWX", E("EPERM")), ("VM: mmap P GROWSDOWN", E("ENODEV")),
        ("VM: mmap P VALIDATE|0x200000", ENOTSUP), ("VM: mmap P type 4", E("EINVAL")),
        ("vCPU: mmap P RW SHARED", ("ok", ("mapping", P))), ("vCPU: mmap P RWX", E("EPERM")),
        ("vCPU: mmap P VALIDATE|SYNC", ENOTSUP), ("vCPU: mmap P GROWSDOWN", E("EINVAL")),
        ("vCPU: mmap P HUGETLB", E("EINVAL")), ("vCPU: mmap P PRIVATE", ("ok", ("mapping", P))),
        ("vCPU: mmap P offset -P", E("EOVERFLOW")),
        ("/dev/kvm: mmap P SHARED|ANONYMOUS", ("ok", ("mapping", P))),
        ("VM: anonymous: read", ("ok", b"ok"))],
    # fs/anon_inodes.c: anon_inode_getfile shares anon_inode_inode, anon_inode_create_getfile
    # (__kvm_gmem_create) makes a new inode (alloc_anon_inode: get_next_ino, current_fsuid,
    # times = now); kvm_gmem_fallocate -> file_modified on success, also for a punch past
    # EOF (kvm_gmem_punch_hole returns 0); mm/memory.c fault_dirty_shared_page ->
    # file_update_time (kvm_gmem_vm_ops has no ->page_mkwrite), only for a write that faults
    "gmem_fops_stat_identity": [
        ("VM, second VM and vCPU fds: one inode", ("ok", True)),
        ("gmem st_dev is the anon_inode mount's (a VM fd's)", ("ok", True)),
        ("two gmems: two inodes, neither the VM fd's", ("ok", True)),
        ("gmem owner is the caller", ("ok", True)),
        ("gmem nlink 1, rdev 0", ("ok", (1, 0))),
        ("gmem times are its creation time", ("ok", True)),
        ("its inode is new", ("ok", True)),
        ("failed calls keep the times", ("ok", True)),
        ("a read fault keeps the times", ("ok", True)),
        ("a write after the read fault (no fault): atime kept, mtime == ctime, later",
         ("ok", (True, True, False))),
        ("a write to a page already writable keeps the times", ("ok", True)),
        ("fallocate: atime kept, mtime == ctime, later", ("ok", (True, True, True))),
        ("punch: mtime == ctime, later", ("ok", (True, True))),
        ("the write faults again: later", ("ok", True)),
        ("a write that faults one page: later", ("ok", True)),
        ("a punch past EOF succeeds and updates mtime too", ("ok", True))],
    # mm/mmap.c do_mmap: *populate = len for VM_LOCKED or MAP_POPULATE without MAP_NONBLOCK;
    # mm/gup.c __mm_populate / populate_vma_page_range (read faults on a shared mapping, the
    # error of a SIGBUS page ignored); then fault_dirty_shared_page only on a later fault
    "gmem_fops_mmap_populate": [
        ("POPULATE: mmap keeps the times", ("ok", True)),
        ("POPULATE: the write took a fault (mtime later)", ("ok", False)),
        ("LOCKED: the write took a fault (mtime later)", ("ok", False)),
        ("POPULATE|NONBLOCK: the write took a fault (mtime later)", ("ok", True)),
        ("plain: the write took a fault (mtime later)", ("ok", True)),
        ("MMAP only: mmap POPULATE", ("ok", ("mapping", 4 * P))),
        ("MMAP only: read", ("sigbus", 0))],
    # the mapping object follows mmap.mmap (extended slices, IndexError, ValueError once
    # closed); kvm_gmem_fault_user_mapping: SIGBUS at or past i_size and without INIT_SHARED
    "gmem_fops_mapping_access": [
        ("[flags 0x3] m[0:16]", ("ok", b"a\0\0\0b\0\0\0c\0\0\0d\0\0\0")),
        ("[flags 0x3] m[12::-4]", ("ok", b"dcba")),
        ("[flags 0x3] m[P-8:P+8:4] (crosses EOF)", ("sigbus", P)),
        ("[flags 0x3] m[P-8:P+8:4] = 4 bytes (crosses EOF)", ("sigbus", P)),
        ("[flags 0x3] m[P-8:P]", ("ok", b"w\0\0\0x\0\0\0")),
        ("[flags 0x3] m[0:16:4] = 3 bytes", ("exc", "IndexError")),
        ("[flags 0x3] m[-1] (past EOF)", ("sigbus", 2 * P - 1)),
        ("[flags 0x3] m[2P]", ("exc", "IndexError")),
        ("[flags 0x3] len after close", ("exc", "ValueError")),
        ("[flags 0x3] m[0] after close", ("exc", "ValueError")),
        ("[flags 0x1] m[0:16:4] = abcd", ("sigbus", 0)),
        ("[flags 0x1] m[P-8:P+8:4] (crosses EOF)", ("sigbus", P - 8))],
})


# x86.c kvm_arch_vcpu_create: "if (!irqchip_in_kernel(vcpu->kvm) || kvm_vcpu_is_reset_bsp(vcpu))
# mp_state = RUNNABLE else UNINITIALIZED"; kvm_vcpu_is_reset_bsp: vcpu_id == kvm->arch.bsp_vcpu_id
REFERENCE.update({
    "x86_vcpu_initial_mp_state": [
        (f"{mode}: vCPU {i}: mp_state", ("ok", want))
        for mode, wants in (("none", (0, 0, 0)), ("kernel", (0, 1, 1)), ("split", (0, 1, 1)),
                            ("boot cpu 1", (1, 0, 1)))
        for i, want in enumerate(wants)
    ],
})

# the PIT's channel-0 timer (kmock.kvm.x86_pit.Pit): i8254.c pit_load_count -> create_pit_timer
# (modes 0, 1, 4 one-shot, 2, 3 periodic, else destroy_pit_timer; nothing with HPET_LEGACY;
# kvm_pit_reset_reinject), pit_timer_fn, pit_do_work (reinject: only with irq_ack, which the
# guest's EOI sets again), kvm_pit_set_reinject; irqchip.c kvm_set_irq with the PIT's own
# irq_source_id: i8259.c pic_set_irq1 (edge memory), ioapic.c ioapic_set_irq (a lowered line
# clears IRR; every raise sets it); __kvm_irq_line_state (a line is the OR of its sources)
REFERENCE.update({
    "x86_pit_tick": [
        ("fresh: PIC IRR, I/O APIC IRR bit 0", ("ok", (0, 0))),
        ("a fresh PIT (mode 0xff) after 30 ms: PIC IRR, I/O APIC IRR bit 0", ("ok", (0, 0))),
        ("mode 2 after 30 ms: PIC IRR, I/O APIC IRR bit 0", ("ok", (1, 0))),
        ("cleared, reinject on, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (0, 0))),
        ("reinject off, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (1, 0))),
        ("cleared again, reinject off, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (1, 0))),
        ("reinject on again, cleared, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (1, 0))),
        ("mode 0xff, cleared, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (0, 0))),
        ("mode 0 after 30 ms: PIC IRR, I/O APIC IRR bit 0", ("ok", (1, 0))),
        ("HPET legacy, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (0, 0))),
        ("HPET legacy off, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (1, 0))),
        ("mode 3, count 0, 110 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (1, 0))),
        ("userspace holds GSI 0 high, 30 ms later: PIC IRR, I/O APIC IRR bit 0", ("ok", (0, 1))),
        ("mode 3, count 0: fired only once its period passed", ("ok", True)),
    ],
})

# fs/open.c do_sys_ftruncate: length < 0 EINVAL before fdget; arch/x86/kernel/sys_x86_64.c
# sys_mmap: off & ~PAGE_MASK EINVAL before ksys_mmap_pgoff; mm/mmap.c ksys_mmap_pgoff: fget
# only without MAP_ANONYMOUS (EBADF), so with it any fd gives anonymous memory (no file:
# no noexec mount, no ->mmap, no size limit); do_mmap: len 0 EINVAL
_FDS = ("/dev/kvm", "VM", "vCPU", "gmem")
REFERENCE.update({
    "fd_checks_before_fdget": [
        ("bad fd: ftruncate -1", E("EINVAL")), ("bad fd: ftruncate 0", E("EBADF")),
        ("bad fd: mmap offset 1", E("EINVAL")),
        ("bad fd: mmap offset P/2 ANONYMOUS", E("EINVAL")), ("bad fd: mmap", E("EBADF")),
        ("bad fd: mmap length 0 ANONYMOUS", E("EINVAL")),
        ("bad fd: anonymous: read", ("ok", b"ok"))] + [
        (f"{n}: ftruncate -1", E("EINVAL")) for n in _FDS] + [
        (f"{n}: mmap offset P+8", E("EINVAL")) for n in _FDS] + [
        (f"{n}: anonymous: read page 63", ("ok", b"hi")) for n in _FDS] + [
        (f"{n}: mmap P PRIVATE|ANONYMOUS offset -P", ("ok", ("mapping", P))) for n in _FDS] + [
        ("gmem: its page is still zero", ("ok", b"\0\0"))],
})


def test_reference_covers_every_scenario():
    missing = set(SCENARIOS) - set(REFERENCE) - set(HOST_SPECIFIC)
    assert not missing, f"scenarios without reference expectations: {sorted(missing)}"
    unknown = (set(REFERENCE) | set(HOST_SPECIFIC)) - set(SCENARIOS)
    assert not unknown


def _check(name, expected):
    with kmock.HostKernel() as h:
        steps = run_scenario(name, h)
    got = {}
    for label, outcome in steps:
        got.setdefault(label, outcome)
    crashes = [s for s in steps if s[1][0] == "crash"]
    assert not crashes, f"{name} crashed on the real kernel: {crashes}"
    bad = [(label, want, got.get(label, "<no such step>")) for label, want in expected if got.get(label) != want]
    assert not bad, f"{name}: the real kernel disagrees with the reference:\n" + "\n".join(
        f"  {label!r}: reference {want!r}, host {have!r}" for label, want, have in bad
    )


@pytest.mark.skipif(not RELEASE.startswith("6.18"), reason=f"reference is for Linux 6.18; this is {RELEASE}")
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_host_agrees_with_reference(name):
    _check(name, REFERENCE[name])


@pytest.mark.skipif(not RELEASE.startswith(PROBE_HOST_RELEASE),
                    reason=f"host-specific rows hold on {PROBE_HOST_RELEASE}* only")
@pytest.mark.parametrize("name", sorted(HOST_SPECIFIC))
def test_host_agrees_with_reference_host_specific(name):
    _check(name, HOST_SPECIFIC[name])


# --- the framework itself ---------------------------------------------------------------------


def test_in_child_on_host_sees_eio_for_vm_ioctls():
    with kmock.HostKernel() as h:
        kvm = h.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        vm = h.ioctl(kvm, K.KVM_CREATE_VM, 0)
        assert in_child(h, lambda s: s.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD)) == ("errno", "EIO")
        assert in_child(h, lambda s: s.ioctl(kvm, K.KVM_GET_API_VERSION, 0)) == ("ok", 12)
        assert in_child(h, lambda s: (outcome_of(s.ioctl, kvm, K.KVM_CREATE_VM, 0),)) == (
            "ok", (("ok", "fd"),))
        out = in_child(h, lambda s: 1 / 0)
        assert out[0] == "crash" and "ZeroDivisionError" in out[1]
        # the parent is unaffected
        assert h.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD) == 1


def test_compare_reports_differences():
    a = [("x", ("ok", 1)), ("y", ("errno", "EINVAL"))]
    b = [("x", ("ok", 1)), ("y", ("errno", "ENOTTY")), ("z", ("ok", None))]
    d = compare(a, b)
    assert len(d) == 2 and "EINVAL" in d[0] and "ENOTTY" in d[0] and "<missing>" in d[1]
    assert compare(a, list(a)) == []


def test_conform_prints_table_and_summary_line():
    lines = []
    matched, total = kmock.testing.conformance.conform(out=lines.append, names=["probe_01_create_gmem_bad_sizes"])
    assert total == 1 and lines[-1] == f"conformance: {matched}/1 scenarios match"
    assert lines[0].split()[:4] == ["scenario", "host", "mock", "match"]


def test_conform_without_kvm_cannot_run(monkeypatch):
    from kmock.testing import conformance

    monkeypatch.setattr(conformance, "kvm_available", lambda: False)
    lines = []
    assert conformance.conform(out=lines.append) == (0, 0)
    assert len(lines) == 1 and "cannot run" in lines[0] and "/dev/kvm" in lines[0]
