"""KVM_GET_STATS_FD on the VM and vCPU fds (kmock.kvm.stats; virt/kvm/binary_stats.c,
virt/kvm/kvm_main.c, arch/x86/kvm/x86.c, arch/arm64/kvm/guest.c)."""

import dataclasses
import errno
import os
import threading

import pytest

import kmock
from kmock.kvm import stats
from kmock.uapi import kvm as K

from ._util import P, create_vm, err

# arch/x86/kvm/x86.c kvm_vm_stats_desc (with KVM_GENERIC_VM_STATS), in table order
X86_VM = ["remote_tlb_flush", "remote_tlb_flush_requests", "mmu_shadow_zapped", "mmu_pte_write",
          "mmu_pde_zapped", "mmu_flooded", "mmu_recycled", "mmu_cache_miss", "mmu_unsync",
          "pages_4k", "pages_2m", "pages_1g", "nx_lpage_splits", "max_mmu_rmap_size",
          "max_mmu_page_hash_collisions"]


def whole(k, fd):
    return k.pread(fd, 1 << 20, 0)


@pytest.fixture
def vm_stats(k):
    _, vm = create_vm(k)
    return vm, k.ioctl(vm, K.KVM_GET_STATS_FD, 0)


def test_vm_header_and_layout(k, vm_stats):
    _, fd = vm_stats
    data = whole(k, fd)
    (flags, name_size, num, id_off, desc_off, data_off), ident, descs = stats.parse(data)
    # binary_stats.c: header, id string (KVM_STATS_NAME_SIZE), num_desc * (16 + 48), data
    assert (flags, name_size, num, id_off, desc_off) == (0, 48, 15, 24, 72)
    assert data_off == 72 + 15 * 64 and len(data) == data_off + 15 * 8
    assert ident == f"kvm-{os.getpid()}"  # kvm_create_vm: "kvm-%d", task_pid_nr(current)
    assert [d.name for d in descs] == X86_VM
    by = {d.name: d for d in descs}
    assert by["remote_tlb_flush"].flags == K.KVM_STATS_TYPE_CUMULATIVE
    assert by["mmu_unsync"].flags == K.KVM_STATS_TYPE_INSTANT
    assert by["max_mmu_rmap_size"].flags == K.KVM_STATS_TYPE_PEAK
    # struct kvm_vm_stat keeps the two peaks the other way round from the table
    assert (by["max_mmu_page_hash_collisions"].offset, by["max_mmu_rmap_size"].offset) == (104, 112)


def test_vcpu_header_descriptors_and_id(k):
    _, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 7)
    fd = k.ioctl(vcpu, K.KVM_GET_STATS_FD, 0)
    head, ident, descs = stats.parse(whole(k, fd))
    assert head[2] == 45 and len(descs) == 45
    assert ident == f"kvm-{os.getpid()}/vcpu-7"  # kvm_vcpu_init: "kvm-%d/vcpu-%d"
    by = {d.name: d for d in descs}
    hist = by["halt_wait_hist"]  # STATS_DESC_LOGHIST_TIME_NSEC: 32 buckets of ns
    assert (hist.flags, hist.exponent, hist.size) == (
        K.KVM_STATS_TYPE_LOG_HIST | K.KVM_STATS_UNIT_SECONDS, -9, 32)
    assert by["blocking"].flags == K.KVM_STATS_TYPE_INSTANT | K.KVM_STATS_UNIT_BOOLEAN
    assert [d.name for d in descs][-2:] == ["guest_mode", "notify_window_exits"]
    offs = [d.offset for d in descs]
    assert offs == sorted(offs) and by["pf_taken"].offset == 7 * 8 + 3 * 32 * 8 + 8


def test_id_is_the_creating_thread(k):
    """task_pid_nr(current) is the thread's id: a vCPU created in a thread says so."""
    _, vm = create_vm(k)
    out = {}

    def make():
        out["tid"] = threading.get_native_id()
        out["vcpu"] = k.ioctl(vm, K.KVM_CREATE_VCPU, 1)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    fd = k.ioctl(out["vcpu"], K.KVM_GET_STATS_FD, 0)
    assert stats.parse(whole(k, fd))[1] == f"kvm-{out['tid']}/vcpu-1"


def test_read_moves_the_position_lseek_does_not(k, vm_stats):
    _, fd = vm_stats
    data = whole(k, fd)
    assert k.read(fd, 24) == data[:24]
    assert k.lseek(fd, 0, os.SEEK_SET) == 24  # noop_llseek answers f_pos
    assert k.lseek(fd, -5, os.SEEK_END) == 24
    assert k.read(fd, 8) == data[24:32]
    dup = k.dup(fd)
    assert k.read(dup, 4) == data[32:36]  # one open file, one position
    assert k.lseek(fd, 0, os.SEEK_CUR) == 36
    assert k.read(fd, 0) == b""


def test_reads_past_the_end_and_bad_calls(k, vm_stats):
    _, fd = vm_stats
    size = len(whole(k, fd))
    assert k.pread(fd, 100, size - 4) == bytes(4)
    assert k.pread(fd, 100, size) == b"" and k.pread(fd, 10, 1 << 40) == b""
    assert err(lambda: k.pread(fd, 10, -1)) == errno.EINVAL
    assert err(lambda: k.write(fd, b"x")) == errno.EBADF
    assert err(lambda: k.pwrite(fd, b"x", 0)) == errno.ESPIPE
    assert err(lambda: k.pwrite(fd, b"x", -1)) == errno.EINVAL
    assert err(lambda: k.ioctl(fd, K.KVM_GET_STATS_FD, 0)) == errno.ENOTTY
    assert err(lambda: k.mmap(fd, P, 1, 1, 0)) == errno.ENODEV
    assert err(lambda: k.fallocate(fd, 0, 0, P)) == errno.EBADF
    assert err(lambda: k.fallocate(fd, 0, 0, 0)) == errno.EINVAL  # vfs_fallocate checks first
    assert err(lambda: k.fallocate(fd, 0x1000, 0, P)) == errno.EOPNOTSUPP
    assert err(lambda: k.ftruncate(fd, 0)) == errno.EINVAL
    assert err(lambda: k.fsync(fd)) == errno.EINVAL
    assert err(lambda: k.lseek(fd, 0, 5)) == errno.EINVAL  # whence > SEEK_MAX
    st = k.fstat(fd)
    assert (st.st_mode, st.st_size) == (0o600, 0)


def test_argument_ignored_and_other_process(k):
    _, vm = create_vm(k)
    fd = k.ioctl(vm, K.KVM_GET_STATS_FD, 12345)
    assert fd >= 0
    # _IOR-encoded variants are other request numbers: the VM's default, ENOTTY
    assert err(lambda: k.ioctl(vm, K.KVM_GET_STATS_FD | (2 << 30) | (8 << 16), 0)) == errno.ENOTTY
    k.vm(vm).dead = True  # kvm_vm_dead: every VM ioctl is EIO
    assert err(lambda: k.ioctl(vm, K.KVM_GET_STATS_FD, 0)) == errno.EIO
    assert stats.parse(whole(k, fd))[1]  # an existing stats fd still reads


def test_stats_fd_keeps_the_vm(k):
    _, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    vfd = k.ioctl(vcpu, K.KVM_GET_STATS_FD, 0)
    obj = k.vm(vm)
    k.close(vcpu)
    k.close(vm)
    assert not obj.destroyed
    assert stats.parse(whole(k, vfd))[1].endswith("/vcpu-0")
    k.close(vfd)
    assert obj.destroyed


def test_counters_follow_exits_and_stage2(k):
    _, vm = create_vm(k)
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    g = k.vm(vm).vcpus[0].guest
    g.outb(0x80, 1)
    g.hlt()
    fd = k.ioctl(vcpu, K.KVM_GET_STATS_FD, 0)
    for _ in range(3):
        k.ioctl(vcpu, K.KVM_RUN, 0)
    data = whole(k, fd)
    head, _, descs = stats.parse(data)
    values = {d.name: int.from_bytes(data[head[5] + d.offset:head[5] + d.offset + 8], "little")
              for d in descs}
    assert (values["exits"], values["io_exits"], values["halt_exits"]) == (3, 1, 2)
    assert values["mmio_exits"] == 0 and values["pf_taken"] == 0
    vfd = k.ioctl(vm, K.KVM_GET_STATS_FD, 0)
    vdata = whole(k, vfd)
    off = stats.parse(vdata)[0][5] + 72  # pages_4k
    assert int.from_bytes(vdata[off:off + 8], "little") == 0  # no memslot, nothing mapped


def test_pages_4k_counts_stage2_leaves(k):
    _, vm = create_vm(k)
    mem = kmock._libc.mmap(None, 4 * P, kmock._libc.PROT_READ | kmock._libc.PROT_WRITE,
                           kmock._libc.MAP_SHARED | kmock._libc.MAP_ANONYMOUS, -1, 0)
    try:
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION, K.kvm_userspace_memory_region(
            slot=0, guest_phys_addr=0, memory_size=4 * P, userspace_addr=mem))
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        k.ioctl(vcpu, K.KVM_PRE_FAULT_MEMORY, K.kvm_pre_fault_memory(gpa=0, size=2 * P))
        fd = k.ioctl(vm, K.KVM_GET_STATS_FD, 0)
        data = whole(k, fd)
        off = stats.parse(data)[0][5] + 72
        assert int.from_bytes(data[off:off + 8], "little") == 2
        k.close(vcpu)
        k.close(vm)
        k.close(fd)
    finally:
        kmock._libc.munmap(mem, 4 * P)


def test_profile_replaces_the_table():
    """A vendor kernel's extra descriptors come from the profile (the host profile probes
    them); a bad table is a usage error, not a traceback."""
    base = kmock.profiles.get("linux-6.18")
    extra = stats.descriptors(base, "vm") + (stats.Desc("mmu_kicks_spared", 0, 0, 1, 120, 0),)
    prof = dataclasses.replace(base, stats_vm_desc=tuple(tuple(d) for d in extra))
    with kmock.Kernel(prof) as k:
        _, vm = create_vm(k)
        data = whole(k, k.ioctl(vm, K.KVM_GET_STATS_FD, 0))
        head, _, descs = stats.parse(data)
        assert head[2] == 16 and descs[-1].name == "mmu_kicks_spared"
        assert len(data) == head[5] + 128
    with kmock.Kernel("linux-6.18", stats_vcpu_desc=(("x", 0),)) as k:
        _, vm = create_vm(k)
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        with pytest.raises(kmock.errors.KmockUsageError, match="stats_vcpu_desc"):
            k.ioctl(vcpu, K.KVM_GET_STATS_FD, 0)


def test_arm64_tables():
    import kmock_arm64

    with kmock.Kernel("linux-arm64", plugins=[kmock_arm64]) as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        _, _, vm_descs = stats.parse(whole(k, k.ioctl(vm, K.KVM_GET_STATS_FD, 0)))
        assert [d.name for d in vm_descs] == ["remote_tlb_flush", "remote_tlb_flush_requests"]
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        _, _, descs = stats.parse(whole(k, k.ioctl(vcpu, K.KVM_GET_STATS_FD, 0)))
        assert len(descs) == 18 and [d.name for d in descs[-7:]] == [
            "hvc_exit_stat", "wfe_exit_stat", "wfi_exit_stat", "mmio_exit_user",
            "mmio_exit_kernel", "signal_exits", "exits"]
