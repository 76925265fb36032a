"""The SNP platform's scenarios for the fail-nth sweep (kmock.testing.fail_nth).

Offered through the ``kmock.fail_nth`` entry-point group (name ``snp``, value
``kmock_snp.scenarios:scenarios``). Each is a small VMM on the syscall API that closes
what it opened even when a call fails, as kmock.testing.vmm_scenarios' are:

``launch``      /dev/sev, an SNP VM with guest_memfd RAM, KVM_SEV_INIT2, a vCPU,
                SNP_LAUNCH_START, the image made private and measured with
                SNP_LAUNCH_UPDATE (looping while ``len`` is left), SNP_LAUNCH_FINISH, then
                a guest that reads its image, writes private memory and halts
``conversion``  a launched guest whose private write makes the VMM convert (memory-fault
                exit, sev_gmem_prepare), then the VMM converts back to shared and punches
                the pages (sev_gmem_invalidate)
``dma``         an in-place guest_memfd (profile gmem-attributes-v8, iommufd policy
                "notifier") launched, mapped for a VFIO device with IOMMU_IOAS_MAP_FILE;
                the device DMAs into a shared page (the IOMMU checks the RMP), then the
                VMM unmaps

The failure points reached are the core's and ``snp.*`` (kmock_snp.state.POINTS). What
the kernel itself does when one of them fails (work kept after a later step failed, the
WARN / KVM_BUG a refused RMPUPDATE leads to) is declared below with its source
(``fail_nth.keeps_progress`` / ``expects_violations``, platform ``snp``): the sweep
reports those runs as "partial: ..." / "expected: ...", not as problems.
"""

import ctypes
import errno
import mmap
import os

from kmock.testing import fail_nth
from kmock.uapi import gmem as G
from kmock.uapi import iommufd as I
from kmock.uapi import kvm as K
from kmock.uapi import sev as S
from kmock.uapi import vfio as V

P = 4096
GPA = 1 << 32
NPAGES = 16
POLICY = S.SNP_POLICY_MASK_RSVD_MBO | S.SNP_POLICY_MASK_SMT


ENCRYPT_OP = "ioctl KVM_MEMORY_ENCRYPT_OP"

for _point, _step in (("snp.fw.launch_update", "the firmware's SNP_LAUNCH_UPDATE"),
                      ("snp.rmpupdate", "rmp_make_private")):
    fail_nth.keeps_progress(
        "snp", _point, "kvm_gmem_populate got the page's folio (filemap_grab_folio) before "
        f"sev_gmem_post_populate's {_step} failed: it stays in the guest_memfd, not prepared "
        "(virt/kvm/guest_memfd.c kvm_gmem_populate, arch/x86/kvm/svm/sev.c)",
        ENCRYPT_OP, ("guest_memfds",))
fail_nth.keeps_progress(
    "snp", "copy_to_user", "snp_launch_update copies the params back (sev_mem_enc_ioctl the "
    "kvm_sev_cmd) after the pages were made private and measured, snp_launch_finish after "
    "the VMSAs were: -EFAULT, the work stays done (arch/x86/kvm/svm/sev.c)",
    ENCRYPT_OP, ("guest_memfds", "arch"))
fail_nth.keeps_progress(
    "snp", "snp.fw.launch_finish", "snp_launch_finish made every VMSA private and measured "
    "it before the firmware's SNP_LAUNCH_FINISH failed; guest_state_protected stays set "
    "(arch/x86/kvm/svm/sev.c)", ENCRYPT_OP, ("arch",))
fail_nth.keeps_progress(
    "snp", "snp.rmpupdate", "kvm_gmem_get_pfn got the faulting page's folio before "
    "sev_gmem_prepare's RMPUPDATE failed: it stays in the guest_memfd, not prepared, and "
    "KVM_RUN fails with EINVAL (virt/kvm/guest_memfd.c, arch/x86/kvm/svm/sev.c)",
    "ioctl KVM_RUN", ("guest_memfds",))
fail_nth.expects_violations(
    "snp", "snp.rmpupdate", ("rmp_invalidate_failed", "rmp_leak"), "sev_gmem_invalidate "
    "only WARNs when RMPUPDATE refuses (the page is freed still assigned); sev_free_vcpu's "
    "kvm_rmp_make_shared leaks the VMSA and KVM_BUG_ONs (arch/x86/kvm/svm/sev.c)")


def make_kernel():
    import kmock

    import kmock_snp

    return kmock.Kernel("linux-6.18-snp", plugins=[kmock_snp])


def make_kernel_in_place():
    import kmock

    import kmock_snp

    return kmock.Kernel("gmem-attributes-v8", plugins=[kmock_snp], platform="snp",
                        iommufd_gmem_policy="notifier")


class SnpVm:
    """A small SNP VMM: its fds and mappings are closed by ``close`` whatever failed."""

    def __init__(self, k, in_place=False):
        self.k = k
        self.in_place = in_place
        self.fds = []
        self.maps = []
        self.src = None

    def fd(self, fd):
        self.fds.append(fd)
        return fd

    def sev_cmd(self, cid, data):
        cmd = S.kvm_sev_cmd(id=cid, data=ctypes.addressof(data), sev_fd=self.sev)
        self.k.ioctl(self.vm, K.KVM_MEMORY_ENCRYPT_OP, cmd)
        return cmd

    def attrs(self, first, n, private):
        if self.in_place:  # the guest_memfd holds the attributes
            self.k.ioctl(self.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, G.kvm_memory_attributes2(
                offset=first * P, size=n * P,
                attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0))
            return
        self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=GPA + first * P, size=n * P,
            attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0))

    def boot(self, image_pages=4):
        k = self.k
        self.kvm = self.fd(k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        self.sev = self.fd(k.open("/dev/sev", os.O_RDWR | os.O_CLOEXEC))
        self.vm = self.fd(k.ioctl(self.kvm, K.KVM_CREATE_VM, K.KVM_X86_SNP_VM))
        self.gmem = self.fd(k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD,
                                    K.kvm_create_guest_memfd(size=NPAGES * P, flags=(
                                        K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED
                                        if self.in_place else 0))))
        self.src = mmap.mmap(-1, NPAGES * P)
        src = ctypes.addressof(ctypes.c_char.from_buffer(self.src))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA,
            memory_size=NPAGES * P, userspace_addr=src, guest_memfd=self.gmem))
        self.sev_cmd(S.KVM_SEV_INIT2, S.kvm_sev_init())
        size = k.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.vcpu = self.fd(k.ioctl(self.vm, K.KVM_CREATE_VCPU, 0))
        self.maps.append(k.mmap(self.vcpu, size, 3, 1, 0))
        self.run = K.kvm_run.from_address(self.maps[-1].address)
        self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start(policy=POLICY))
        self.src[:9] = b"SNP image"
        self.attrs(0, image_pages, True)
        u = S.kvm_sev_snp_launch_update(gfn_start=GPA // P, uaddr=src, len=image_pages * P,
                                        type=S.KVM_SEV_SNP_PAGE_TYPE_NORMAL)
        while u.len:
            before = u.len
            self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_UPDATE, u)
            if u.len == before:
                raise OSError(errno.EIO, "SNP_LAUNCH_UPDATE made no progress")
        self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish())
        self.guest = k.vm(self.vm).vcpus[0].guest

    def run_until_halt(self, limit=8):
        """KVM_RUN, converting on memory-fault exits as QEMU does."""
        for _ in range(limit):
            try:
                self.k.ioctl(self.vcpu, K.KVM_RUN, 0)
            except OSError as e:
                if e.errno == errno.EFAULT and self.run.exit_reason == K.KVM_EXIT_MEMORY_FAULT:
                    mf = self.run.memory_fault
                    self.attrs((mf.gpa - GPA) // P, mf.size // P,
                               bool(mf.flags & K.KVM_MEMORY_EXIT_FLAG_PRIVATE))
                    continue
                raise
            if self.run.exit_reason == K.KVM_EXIT_HLT:
                return
        raise OSError(errno.EIO, "the guest did not halt")

    def close(self):
        for m in self.maps:
            m.close()
        for fd in reversed(self.fds):
            self.k.close(fd)
        if self.src is not None:
            self.src.close()


def launch(k):
    v = SnpVm(k)
    try:
        v.boot()
        v.guest.read(GPA, 9, private=True)
        v.guest.write(GPA + P, b"private", private=True)
        v.guest.hlt()
        v.run_until_halt()
    finally:
        v.close()


def conversion(k):
    v = SnpVm(k)
    try:
        v.boot(image_pages=1)
        v.guest.write(GPA + 8 * P, b"private", private=True)  # memory fault: to private
        v.guest.hlt()
        v.run_until_halt()
        v.attrs(8, 1, False)
        k.fallocate(v.gmem, 3, 8 * P, P)  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
    finally:
        v.close()


def dma(k):
    v = SnpVm(k, in_place=True)
    try:
        v.boot()
        ictx = v.fd(k.open("/dev/iommu", os.O_RDWR))
        dev = k.add_vfio_device()
        vfd = v.fd(k.open(dev.path, os.O_RDWR))
        k.ioctl(vfd, V.VFIO_DEVICE_BIND_IOMMUFD,
                V.vfio_device_bind_iommufd(argsz=24, iommufd=ictx))
        alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        k.ioctl(ictx, I.IOMMU_IOAS_ALLOC, alloc)
        k.ioctl(vfd, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=alloc.out_ioas_id))
        iova = 1 << 30
        k.ioctl(ictx, I.IOMMU_IOAS_MAP_FILE, I.iommu_ioas_map_file(
            size=ctypes.sizeof(I.iommu_ioas_map_file),
            flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE
            | I.IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id=alloc.out_ioas_id, fd=v.gmem, start=8 * P, length=4 * P, iova=iova))
        dev.dma_write(iova, b"from the device")
        assert dev.dma_read(iova, 15) == b"from the device"
        k.ioctl(ictx, I.IOMMU_IOAS_UNMAP, I.iommu_ioas_unmap(
            size=ctypes.sizeof(I.iommu_ioas_unmap), ioas_id=alloc.out_ioas_id, iova=iova,
            length=4 * P))
    finally:
        v.close()


def scenarios():
    """{name: (scenario, make_kernel)} of the snp platform (the kmock.fail_nth group)."""
    return {"launch": (launch, make_kernel), "conversion": (conversion, make_kernel),
            "dma": (dma, make_kernel_in_place)}
