"""``kmock demo --platform snp``: an SNP VMM launches a guest, converts, DMAs, and the
RMP refuses one DMA.

Offered through the ``kmock.demos`` entry-point group (name ``snp``); the signature is
examples/vmm_demo.py's ``run(out, platform, trace) -> (kernel, story lines)``. The VMM,
on the syscall API only:

1. opens /dev/sev, creates a KVM_X86_SNP_VM with an in-place guest_memfd (MMAP, profile
   gmem-attributes-v8) bound at 4 GiB, KVM_SEV_INIT2, vCPU 0;
2. launches: SNP_LAUNCH_START, the first pages made private
   (KVM_SET_MEMORY_ATTRIBUTES2 on the guest_memfd) and measured with
   SNP_LAUNCH_UPDATE, SNP_LAUNCH_FINISH;
3. maps the guest_memfd's first pages for a VFIO device (IOMMU_IOAS_MAP_FILE, policy
   "notifier");
4. runs the guest: it asks for a shared page to become private (GHCB MSR page-state
   change: a KVM_HC_MAP_GPA_RANGE exit; the VMM converts), PVALIDATEs it, writes a
   secret and halts;
5. lets the device DMA: into a shared page (fine), then into the page the guest made
   private. SNP keeps the IOMMU entry at a conversion (the IOMMU checks the RMP at each
   access): the AMD IOMMU blocks the write with an RMP_FAULT event (0xd) because the
   frame is guest-owned, which kmock records against the device.
"""

import ctypes
import os

import kmock
from kmock.uapi import gmem as G
from kmock.uapi import iommufd as I
from kmock.uapi import kvm as K
from kmock.uapi import sev as S
from kmock.uapi import vfio as V
from kmock.testing.demo_vmm import Story, run_until_halt

P = 4096
GPA = 1 << 32
NPAGES = 64
IMAGE = 4
IOVA = 1 << 30
WINDOW = 16  # pages mapped for the device
POLICY = S.SNP_POLICY_MASK_RSVD_MBO | S.SNP_POLICY_MASK_SMT


class SnpDemoVmm:
    def __init__(self, k):
        self.k = k
        self.kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        self.sev = k.open("/dev/sev", os.O_RDWR | os.O_CLOEXEC)
        self.vm = k.ioctl(self.kvm, K.KVM_CREATE_VM, K.KVM_X86_SNP_VM)
        self.gmem = k.ioctl(self.vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=NPAGES * P, flags=K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED))
        k.ioctl(self.vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA,
            memory_size=NPAGES * P, guest_memfd=self.gmem))
        self.sev_cmd(S.KVM_SEV_INIT2, S.kvm_sev_init())
        self.vcpu = k.ioctl(self.vm, K.KVM_CREATE_VCPU, 0)
        size = k.ioctl(self.kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
        self.run_map = k.mmap(self.vcpu, size, 3, 1, 0)
        self.run = K.kvm_run.from_address(self.run_map.address)

    def sev_cmd(self, cid, data):
        cmd = S.kvm_sev_cmd(id=cid, data=ctypes.addressof(data), sev_fd=self.sev)
        self.k.ioctl(self.vm, K.KVM_MEMORY_ENCRYPT_OP, cmd)

    def convert(self, gpa, size, private):
        self.k.ioctl(self.gmem, G.KVM_SET_MEMORY_ATTRIBUTES2, G.kvm_memory_attributes2(
            offset=gpa - GPA, size=size,
            attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0))

    def launch(self, image):
        self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start(policy=POLICY))
        self.convert(GPA, IMAGE * P, True)
        src = ctypes.create_string_buffer(image.ljust((IMAGE + 1) * P, b"\0"))
        addr = (ctypes.addressof(src) + P - 1) & ~(P - 1)
        ctypes.memmove(addr, image, len(image))
        u = S.kvm_sev_snp_launch_update(gfn_start=GPA // P, uaddr=addr, len=IMAGE * P,
                                        type=S.KVM_SEV_SNP_PAGE_TYPE_NORMAL)
        while u.len:
            self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_UPDATE, u)
        self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish())
        cap = K.kvm_enable_cap(cap=K.KVM_CAP_EXIT_HYPERCALL)
        cap.args[0] = 1 << K.KVM_HC_MAP_GPA_RANGE
        self.k.ioctl(self.vm, K.KVM_ENABLE_CAP, cap)

    def attach_device(self):
        k = self.k
        self.iommufd = k.open("/dev/iommu", os.O_RDWR)
        self.device = k.add_vfio_device()
        self.vfio = k.open(self.device.path, os.O_RDWR)
        k.ioctl(self.vfio, V.VFIO_DEVICE_BIND_IOMMUFD,
                V.vfio_device_bind_iommufd(argsz=24, iommufd=self.iommufd))
        alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        k.ioctl(self.iommufd, I.IOMMU_IOAS_ALLOC, alloc)
        self.ioas = alloc.out_ioas_id
        k.ioctl(self.vfio, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=self.ioas))
        k.ioctl(self.iommufd, I.IOMMU_IOAS_MAP_FILE, I.iommu_ioas_map_file(
            size=ctypes.sizeof(I.iommu_ioas_map_file),
            flags=I.IOMMU_IOAS_MAP_FIXED_IOVA | I.IOMMU_IOAS_MAP_READABLE
            | I.IOMMU_IOAS_MAP_WRITEABLE,
            ioas_id=self.ioas, fd=self.gmem, start=IMAGE * P, length=WINDOW * P,
            iova=IOVA))

    def run_until_halt(self, say):
        run_until_halt(self.k, self.vcpu, self.run, self.convert, say,
                       hypercall="MAP_GPA_RANGE (GHCB page-state change)", max_exits=32)

def run(out=print, platform="snp", trace=None):
    """Run the SNP demo; returns (kernel, story lines). The caller closes the kernel."""
    import kmock_snp

    say = Story(out)

    kernel = kmock.Kernel("gmem-attributes-v8", plugins=[kmock_snp], platform="snp",
                          iommufd_gmem_policy="notifier", trace=trace)
    vmm = SnpDemoVmm(kernel)
    say(f"VMM: /dev/sev open; SNP VM (KVM_X86_SNP_VM) with a {NPAGES * P >> 10} KiB "
        f"in-place guest_memfd at gpa {GPA:#x}; KVM_SEV_INIT2; vCPU 0")
    vmm.launch(b"SNP boot image")
    say(f"VMM: SNP_LAUNCH_START, {IMAGE} pages made private and measured "
        f"(SNP_LAUNCH_UPDATE), SNP_LAUNCH_FINISH: the guest is launched")
    vmm.attach_device()
    say(f"VMM: VFIO device {vmm.device.path} bound to /dev/iommu; pages {IMAGE}.."
        f"{IMAGE + WINDOW - 1} of guest memory mapped at iova {IOVA:#x} (MAP_FILE)")
    guest = kernel.vm(vmm.vm).vcpus[0].guest
    page = GPA + (IMAGE + 2) * P
    guest.read(GPA, 14, private=True)
    guest.snp.psc_msr(page, private=True)
    guest.snp.pvalidate(page)
    guest.write(page, b"secret", private=True)
    guest.hlt()
    say(f"guest: reads its measured image, makes gpa {page:#x} private (GHCB MSR page-state "
        f"change, then PVALIDATE), writes a secret there, halts")
    vmm.run_until_halt(say)
    vmm.device.dma_write(IOVA, b"hello guest")
    say(f"device: DMA write at iova {IOVA:#x} (a shared page): fine")
    target = IOVA + 2 * P
    say(f"device: DMA write at iova {target:#x} (the page the guest made private)")
    try:
        vmm.device.dma_write(target, b"overwrite")
        say("  the write went through")
    except kmock.DmaFault as e:
        say(f"  the AMD IOMMU blocks it: {e}")
    say.violations(kernel)
    return kernel, say.lines


if __name__ == "__main__":
    k, _ = run()
    k.close_all()
