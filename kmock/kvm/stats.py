"""Binary statistics: KVM_GET_STATS_FD on the VM and vCPU fds (Linux 6.18).

The file of a stats fd is, as virt/kvm/binary_stats.c kvm_stats_read() lays it out::

    [0, 24)                         struct kvm_stats_header
    [id_offset, +KVM_STATS_NAME_SIZE)  the id string, NUL-padded ("kvm-<pid>",
                                    "kvm-<pid>/vcpu-<id>")
    [desc_offset, +num_desc * 64)   struct _kvm_stats_desc: kvm_stats_desc + name[48]
    [data_offset, +size of the stat struct)  the u64 values

What the kernel fixes, and where (virt/kvm/kvm_main.c, Linux 6.12-6.18):

- kvm_vm_ioctl_get_stats_fd / kvm_vcpu_ioctl_get_stats_fd: the argument is ignored; a
  new O_RDONLY | O_CLOEXEC anonymous file "kvm-vm-stats" / "kvm-vcpu-stats:<vcpu_id>"
  opened with FMODE_PREAD (anon_inode_getfile_fmode), holding a VM reference (the
  stats fd outlives the VM and vCPU fds).
- the id string is written at creation: kvm_create_vm() "kvm-%d" and kvm_vcpu_init()
  "kvm-%d/vcpu-%d", with task_pid_nr(current) of the creating task.
- file_operations: .read (kvm_stats_read at *f_pos), .llseek = noop_llseek (returns
  f_pos, moves nothing), .release; nothing else, so: write EBADF and pwrite ESPIPE (no
  FMODE_WRITE / FMODE_PWRITE), ioctl ENOTTY, mmap ENODEV, fallocate EBADF (after
  vfs_fallocate's argument checks), ftruncate and fsync EINVAL, pread at a negative
  offset EINVAL, lseek with whence > SEEK_MAX EINVAL (ksys_lseek). A read past the end
  returns 0. Probed on this project's 6.18.44 host (tests/conformance).

The descriptor tables are the arch's: arch/x86/kvm/x86.c kvm_vm_stats_desc /
kvm_vcpu_stats_desc with KVM_GENERIC_VM_STATS / KVM_GENERIC_VCPU_STATS
(include/linux/kvm_host.h), or arch/arm64/kvm/guest.c for arm64 profiles. A kernel
with vendor additions has more descriptors (the 6.18.44 host has ``mmu_kicks_spared``,
``pf_parked``, ``pf_park_timeouts``): the profile settings ``stats_vm_desc`` /
``stats_vcpu_desc`` replace the arch table, and the ``host`` profile probes them.

Values: what kmock tracks (stage-2 leaves by size for pages_4k/2m/1g; KVM_RUN returns
to userspace by exit reason for exits, io_exits, mmio_exits, halt_exits, hypercalls,
or arm64's exits, mmio_exit_user, hvc_exit_stat); every other counter reads 0.
"""

import collections
import errno
import os
import struct
import threading

from .. import _libc
from ..errors import KmockUsageError, oserror
from ..file import File
from ..uapi import kvm as K

#: include/linux/kvm_host.h KVM_STATS_NAME_SIZE (the name and id string field sizes)
KVM_STATS_NAME_SIZE = 48
HEADER_SIZE = 24  # sizeof(struct kvm_stats_header)
#: sizeof(struct _kvm_stats_desc): struct kvm_stats_desc (16 bytes) + name[48]
DESC_SIZE = 16 + KVM_STATS_NAME_SIZE
#: include/linux/kvm_host.h HALT_POLL_HIST_COUNT (buckets of the halt-poll histograms)
HALT_POLL_HIST_COUNT = 32
SEEK_MAX = 4  # SEEK_HOLE

_HEADER = struct.Struct("<6I")
_DESC = struct.Struct(f"<IhHII{KVM_STATS_NAME_SIZE}s")

#: one descriptor: name, flags, exponent, size (u64 items), offset (bytes into the stat
#: struct), bucket_size
Desc = collections.namedtuple("Desc", "name flags exponent size offset bucket_size")

_NONE = K.KVM_STATS_UNIT_NONE | K.KVM_STATS_BASE_POW10
_KINDS = {  # kvm_host.h STATS_DESC_* macros: (flags, exponent, size)
    "COUNTER": (K.KVM_STATS_TYPE_CUMULATIVE | _NONE, 0, 1),
    "ICOUNTER": (K.KVM_STATS_TYPE_INSTANT | _NONE, 0, 1),
    "PCOUNTER": (K.KVM_STATS_TYPE_PEAK | _NONE, 0, 1),
    "IBOOLEAN": (K.KVM_STATS_TYPE_INSTANT | K.KVM_STATS_UNIT_BOOLEAN | K.KVM_STATS_BASE_POW10, 0, 1),
    "TIME_NSEC": (K.KVM_STATS_TYPE_CUMULATIVE | K.KVM_STATS_UNIT_SECONDS | K.KVM_STATS_BASE_POW10,
                  -9, 1),
    "LOGHIST_TIME_NSEC": (K.KVM_STATS_TYPE_LOG_HIST | K.KVM_STATS_UNIT_SECONDS
                          | K.KVM_STATS_BASE_POW10, -9, HALT_POLL_HIST_COUNT),
}


def _table(descs, struct_order):
    """Descriptors in table order; offsets from the stat struct's field order."""
    kind_of = {name: kind for kind, name in descs}
    offsets, off = {}, 0
    for name in struct_order:
        offsets[name] = off
        off += 8 * _KINDS[kind_of[name]][2]
    return tuple(Desc(name, *_KINDS[kind][:2], _KINDS[kind][2], offsets[name], 0)
                 for kind, name in descs)


# KVM_GENERIC_VM_STATS(): struct kvm_vm_stat_generic
_GENERIC_VM = [("COUNTER", "remote_tlb_flush"), ("COUNTER", "remote_tlb_flush_requests")]
# KVM_GENERIC_VCPU_STATS(): struct kvm_vcpu_stat_generic
_GENERIC_VCPU = [
    ("COUNTER", "halt_successful_poll"), ("COUNTER", "halt_attempted_poll"),
    ("COUNTER", "halt_poll_invalid"), ("COUNTER", "halt_wakeup"),
    ("TIME_NSEC", "halt_poll_success_ns"), ("TIME_NSEC", "halt_poll_fail_ns"),
    ("TIME_NSEC", "halt_wait_ns"), ("LOGHIST_TIME_NSEC", "halt_poll_success_hist"),
    ("LOGHIST_TIME_NSEC", "halt_poll_fail_hist"), ("LOGHIST_TIME_NSEC", "halt_wait_hist"),
    ("IBOOLEAN", "blocking"),
]

# arch/x86/kvm/x86.c kvm_vm_stats_desc; struct kvm_vm_stat (arch/x86/include/asm/kvm_host.h)
# keeps max_mmu_page_hash_collisions before max_mmu_rmap_size, the table the other way
_X86_VM = _GENERIC_VM + [
    ("COUNTER", "mmu_shadow_zapped"), ("COUNTER", "mmu_pte_write"), ("COUNTER", "mmu_pde_zapped"),
    ("COUNTER", "mmu_flooded"), ("COUNTER", "mmu_recycled"), ("COUNTER", "mmu_cache_miss"),
    ("ICOUNTER", "mmu_unsync"), ("ICOUNTER", "pages_4k"), ("ICOUNTER", "pages_2m"),
    ("ICOUNTER", "pages_1g"), ("ICOUNTER", "nx_lpage_splits"),
    ("PCOUNTER", "max_mmu_rmap_size"), ("PCOUNTER", "max_mmu_page_hash_collisions"),
]
_X86_VM_ORDER = [n for _, n in _X86_VM[:-2]] + ["max_mmu_page_hash_collisions", "max_mmu_rmap_size"]

# arch/x86/kvm/x86.c kvm_vcpu_stats_desc (struct kvm_vcpu_stat has the same order)
_X86_VCPU = _GENERIC_VCPU + [("COUNTER", n) for n in (
    "pf_taken", "pf_fixed", "pf_emulate", "pf_spurious", "pf_fast", "pf_mmio_spte_created",
    "pf_guest", "tlb_flush", "invlpg", "exits", "io_exits", "mmio_exits", "signal_exits",
    "irq_window_exits", "nmi_window_exits", "l1d_flush", "halt_exits", "request_irq_exits",
    "irq_exits", "host_state_reload", "fpu_reload", "insn_emulation", "insn_emulation_fail",
    "hypercalls", "irq_injections", "nmi_injections", "req_event", "nested_run",
    "directed_yield_attempted", "directed_yield_successful", "preemption_reported",
    "preemption_other")] + [("IBOOLEAN", "guest_mode"), ("COUNTER", "notify_window_exits")]

# arch/arm64/kvm/guest.c: the generic VM stats only; the vCPU's generic ones and seven exits
_ARM64_VCPU = _GENERIC_VCPU + [("COUNTER", n) for n in (
    "hvc_exit_stat", "wfe_exit_stat", "wfi_exit_stat", "mmio_exit_user", "mmio_exit_kernel",
    "signal_exits", "exits")]

TABLES = {
    "x86": (_table(_X86_VM, _X86_VM_ORDER), _table(_X86_VCPU, [n for _, n in _X86_VCPU])),
    "arm64": (_table(_GENERIC_VM, [n for _, n in _GENERIC_VM]),
              _table(_ARM64_VCPU, [n for _, n in _ARM64_VCPU])),
}

#: exit reason of a KVM_RUN that returned 0 -> the counters it adds to, per arch
_EXIT_COUNTERS = {
    "x86": {K.KVM_EXIT_IO: ("io_exits",), K.KVM_EXIT_MMIO: ("mmio_exits",),
            K.KVM_EXIT_HLT: ("halt_exits",), K.KVM_EXIT_HYPERCALL: ("hypercalls",)},
    "arm64": {K.KVM_EXIT_MMIO: ("mmio_exit_user",), K.KVM_EXIT_HYPERCALL: ("hvc_exit_stat",)},
}


#: every name VcpuStat.count_exit increments (VcpuStat starts each at 0)
_COUNTED = ("exits",) + tuple(sorted({n for reasons in _EXIT_COUNTERS.values()
                                      for names in reasons.values() for n in names}))


def descriptors(profile, kind):
    """The descriptor table (a tuple of Desc) of ``kind`` ("vm" or "vcpu") for ``profile``."""
    custom = getattr(profile, f"stats_{kind}_desc", None)
    if custom is not None:
        try:
            descs = tuple(Desc(*d) for d in custom)
        except TypeError:
            descs = None
        if descs is None or not all(type(d.name) is str and all(type(v) is int for v in d[1:])
                                    for d in descs):
            raise KmockUsageError(f"profile setting stats_{kind}_desc: each descriptor is "
                                  f"(name, flags, exponent, size, offset, bucket_size)")
        return descs
    vm_table, vcpu_table = TABLES.get(profile.arch, TABLES["x86"])
    return vm_table if kind == "vm" else vcpu_table


def parse(data):
    """(header, id string, [Desc]) of the bytes of a stats file read from offset 0 (also
    for the real kernel's: the host profile and the conformance tests use it)."""
    flags, name_size, num_desc, id_off, desc_off, data_off = _HEADER.unpack_from(data, 0)
    ident = bytes(data[id_off:id_off + name_size]).split(b"\0", 1)[0].decode()
    size = 16 + name_size
    descs = []
    for i in range(num_desc):
        at = desc_off + i * size
        fl, exp, n, off, bucket = struct.unpack_from("<IhHII", data, at)
        name = bytes(data[at + 16:at + size]).split(b"\0", 1)[0].decode()
        descs.append(Desc(name, fl, exp, n, off, bucket))
    return (flags, name_size, num_desc, id_off, desc_off, data_off), ident, descs


def task_pid_nr():
    """task_pid_nr(current): the id of the thread whose syscall this is (under ``kmock
    serve``, the client's thread: kmock._libc.current_tid)."""
    return _libc.current_tid()


# --- the values -----------------------------------------------------------------------------


class VcpuStat:
    """The counters of one vCPU that kmock tracks (struct kvm_vcpu_stat, in part), for a
    vCPU of ``arch`` ("x86" or "arm64")."""

    def __init__(self, arch="x86"):
        # a plain dict with every counted name present: ``+= 1`` on a Counter goes through
        # its Python-level methods (about 1,000 instructions each, on every KVM_RUN)
        self.counts = dict.fromkeys(_COUNTED, 0)
        self.per_reason = _EXIT_COUNTERS.get(arch, {})

    def count_exit(self, run):
        """KVM_RUN returned to userspace with ``run`` (the vCPU's kvm_run, or None once the
        fd is closed): count ``exits`` and the arch's counter of its exit reason, as
        vcpu_enter_guest and the exit handlers (handle_io, __kvm_emulate_halt, ...) do for
        the exits that reach userspace."""
        counts = self.counts
        counts["exits"] += 1
        if run is not None:
            names = self.per_reason.get(run.exit_reason)
            if names is not None:
                for name in names:
                    counts[name] += 1


def _vm_values(vm):
    values = {}
    stage2 = getattr(vm, "stage2", None)
    if stage2 is not None:
        counts = stage2.counts()
        values["pages_4k"] = counts.get(1 << 12, 0)
        values["pages_2m"] = counts.get(1 << 21, 0)
        values["pages_1g"] = counts.get(1 << 30, 0)
    return values


def _data(descs, values):
    size = max((d.offset + 8 * d.size for d in descs), default=0)
    buf = bytearray(size)
    for d in descs:
        v = values.get(d.name)
        if v and d.size == 1:
            struct.pack_into("<Q", buf, d.offset, v & 0xFFFFFFFFFFFFFFFF)
    return bytes(buf)


# --- the file ---------------------------------------------------------------------------------


def _image(ident, descs):
    """Header, id string and descriptors: the part of the file that never changes."""
    n = len(descs)
    desc_off = HEADER_SIZE + KVM_STATS_NAME_SIZE
    head = _HEADER.pack(0, KVM_STATS_NAME_SIZE, n, HEADER_SIZE, desc_off, desc_off + n * DESC_SIZE)
    ident = ident.encode()[:KVM_STATS_NAME_SIZE - 1].ljust(KVM_STATS_NAME_SIZE, b"\0")
    body = b"".join(_DESC.pack(d.flags, d.exponent, d.size, d.offset, d.bucket_size,
                               d.name.encode()[:KVM_STATS_NAME_SIZE - 1]) for d in descs)
    return head + ident + body


class StatsFile(File):
    """An open binary stats fd (kvm_vm_stats_fops / kvm_vcpu_stats_fops)."""

    file_type = "kvm-stats"
    has_llseek = True
    #: kvm_vm_ioctl_get_stats_fd / kvm_vcpu_ioctl_get_stats_fd: anon_inode_getfile(...,
    #: O_RDONLY)
    f_flags = os.O_RDONLY

    def __init__(self, kernel, vm, ident, descs, values, name):
        super().__init__(kernel)
        self.vm = vm
        #: the anonymous inode's name ("kvm-vm-stats", "kvm-vcpu-stats:<id>")
        self.name = name
        self.descs = descs
        self.image = _image(ident, descs)
        self.values = values  # () -> {name: value}
        self.size = len(self.image) + max((d.offset + 8 * d.size for d in descs), default=0)
        self.pos = 0
        self.pos_lock = threading.Lock()
        vm.get()  # kvm_get_kvm: the stats fd keeps the VM alive

    def release(self):
        self.vm.put()

    def contents(self, start, n):
        """kvm_stats_read(): bytes [start, start + n) of the file (short at its end)."""
        end = min(self.size, start + n)
        if end <= start:
            return b""
        image = self.image
        if end <= len(image):
            return image[start:end]
        data = _data(self.descs, self.values())
        return (image + data)[start:end]

    def read(self, n):
        with self.pos_lock:
            data = self.contents(self.pos, n)
            self.pos += len(data)
        return data

    def pread(self, n, offset):
        if offset < 0:
            raise oserror(errno.EINVAL)  # ksys_pread64
        return self.contents(offset, n)

    def write(self, data):
        raise oserror(errno.EBADF)  # vfs_write: not FMODE_WRITE

    def pwrite(self, data, offset):
        if offset < 0:
            raise oserror(errno.EINVAL)  # ksys_pwrite64
        raise oserror(errno.ESPIPE)  # no FMODE_PWRITE

    def lseek(self, pos, how):
        if not 0 <= how <= SEEK_MAX:
            raise oserror(errno.EINVAL)  # ksys_lseek
        return self.pos  # noop_llseek

    def fallocate(self, mode, offset, length):
        """vfs_fallocate: its argument checks, then EBADF (not open for writing)."""
        try:
            super().fallocate(mode, offset, length)
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
        raise oserror(errno.EBADF)

    def snapshot(self):
        return {"name": self.name}


def vm_get_stats_fd(f, arg):
    """kvm_vm_ioctl_get_stats_fd: the argument is ignored."""
    vm = f.vm
    vm.check_caller()
    descs = descriptors(vm.kernel.profile, "vm")
    stats = StatsFile(vm.kernel, vm, vm.stats_id, descs, lambda: _vm_values(vm), "kvm-vm-stats")
    return vm.kernel.fdtable.install(stats)


def vcpu_get_stats_fd(f, arg):
    """kvm_vcpu_ioctl_get_stats_fd: the argument is ignored."""
    vcpu = f.vcpu
    vm = vcpu.vm
    vm.check_caller()
    descs = descriptors(vm.kernel.profile, "vcpu")
    stats = StatsFile(vm.kernel, vm, vcpu.stats_id, descs, lambda: dict(vcpu.stat.counts),
                      f"kvm-vcpu-stats:{vcpu.id}")
    return vm.kernel.fdtable.install(stats)
