"""TDX scenarios of the fail-nth sweep (kmock.testing.fail_nth), offered through the
``kmock.fail_nth`` entry point ``tdx = "kmock_tdx.scenarios:scenarios"``.

Each is a small VMM against the Kernel's syscall API that closes what it opened even when
a call fails, as a VMM's error path should:

``launch``      a TD launched in intel-tdx.rst's order (INIT_VM: TDH.MNG.CREATE/INIT,
                INIT_VCPU, INIT_MEM_REGION: TDH.MEM.PAGE.ADD, FINALIZE_VM: TDH.MR.FINALIZE),
                then a guest that halts (inside KVM_RUN: the VMM's signal ends the run,
                EINTR with KVM_EXIT_INTR)
``conversion``  the launched TD's guest accepts a page (the fault AUGs it), then the VMM
                converts an ADDed page to shared and back with KVM_SET_MEMORY_ATTRIBUTES
                (TDH.MEM.RANGE.BLOCK, TRACK, PAGE.REMOVE)

The sweep runs on ``tdx_post_populate_cleanups=True`` (6.19): before it, a failed
TDH.MEM.PAGE.ADD leaves a premapped SPTE behind (the kernel's own state change, tested in
tests/tdx/test_failure_points.py), which the sweep's "a failed call changed nothing"
check would report. What tdx.c itself does when a step fails (a change kept after a
failed step, the TD bugged by KVM_BUG_ON) is declared below with its source
(``fail_nth.keeps_progress`` / ``expects_violations``, platform ``tdx``): the sweep
reports those runs as "partial: ..." / "expected: ...", not as problems.
TDH.MEM.SEPT.ADD and TDH.MEM.PAGE.DEMOTE failures are KVM_BUG_ON too, but no scenario
reaches them yet, so they are not declared (a declaration no run uses would hide a
regression; tests/tdx/test_fail_nth_tdx.py checks each is used).
"""

import ctypes
import errno
import mmap
import os

from kmock.testing import fail_nth
from kmock.uapi import kvm as K
from kmock.uapi import tdx as T

from .td import FAILURE_POINTS

P = 4096
GPA = 1 << 32
NPAGES = 16


ENCRYPT_OP = "ioctl KVM_MEMORY_ENCRYPT_OP"

fail_nth.keeps_progress(
    "tdx", "copy_to_user", "tdx_vm_ioctl copies the kvm_tdx_cmd back after tdx_td_init or "
    "tdx_td_finalize did their work, tdx_vcpu_init_mem_region copies the region back after "
    "its pages were added: -EFAULT, nothing undone (arch/x86/kvm/vmx/tdx.c)",
    ENCRYPT_OP, ("vms", "guest_memfds", "arch"))
fail_nth.keeps_progress(
    "tdx", FAILURE_POINTS["TDH.MEM.PAGE.ADD"][0], "kvm_gmem_populate got the page's folio "
    "before tdx_gmem_post_populate's TDH.MEM.PAGE.ADD failed: it stays in the guest_memfd, "
    "not prepared (virt/kvm/guest_memfd.c kvm_gmem_populate, arch/x86/kvm/vmx/tdx.c)",
    ENCRYPT_OP, ("guest_memfds",))
fail_nth.expects_violations(
    "tdx", FAILURE_POINTS["TDH.MEM.PAGE.AUG"][0], "td_bugged", "tdx_mem_page_aug: a status "
    "that is not busy is KVM_BUG_ON, the TD is bugged and the faulting KVM_RUN fails with "
    "EIO, the page's folio got by kvm_gmem_get_pfn before (arch/x86/kvm/vmx/tdx.c)",
    "ioctl KVM_RUN", ("vms", "guest_memfds", "violations"))
for _leaf, _fn in (("TDH.MEM.RANGE.BLOCK", "tdx_sept_zap_private_spte"),
                   ("TDH.MEM.TRACK", "tdx_track"),
                   ("TDH.MEM.PAGE.REMOVE", "tdx_sept_drop_private_spte")):
    # consumed while a conversion or the teardown zaps the S-EPT: the zapping call itself
    # succeeds (the zap cannot fail), the TD is bugged and later ioctls fail with EIO
    fail_nth.expects_violations(
        "tdx", FAILURE_POINTS[_leaf][0], "td_bugged", f"{_fn}: {_leaf} failing with a "
        "status that is not busy is KVM_BUG_ON, the TD is bugged (arch/x86/kvm/vmx/tdx.c)")


def make_kernel():
    import kmock
    import kmock_tdx

    return kmock.Kernel("linux-6.18-tdx", plugins=[kmock_tdx], tdx_post_populate_cleanups=True)


def _cmd(id, data=0, flags=0):
    return T.kvm_tdx_cmd(id=id, flags=flags, data=data)


class TdVmm:
    def __init__(self, k):
        self.k = k
        self.fds = []
        self.mem = []
        self.maps = []

    def fd(self, fd):
        self.fds.append(fd)
        return fd

    def buf(self, npages):
        m = mmap.mmap(-1, npages * P)
        self.mem.append(m)
        return m, ctypes.addressof(ctypes.c_char.from_buffer(m))

    def attrs(self, gpa, size, private):
        self.k.ioctl(self.vm, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=gpa, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0))

    def launch(self):
        k = self.k
        self.kvm = self.fd(k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC))
        vm = self.vm = self.fd(k.ioctl(self.kvm, K.KVM_CREATE_VM, K.KVM_X86_TDX_VM))
        cap = K.kvm_enable_cap(cap=T.KVM_CAP_SPLIT_IRQCHIP)
        cap.args[0] = 24
        k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
        init = T.with_cpuid_entries(T.kvm_tdx_init_vm, 1)()
        init.hdr.attributes = T.TDX_TD_ATTR_SEPT_VE_DISABLE
        init.hdr.xfam = 0x3
        init.hdr.cpuid.nent = 1
        init.entries[0] = K.kvm_cpuid_entry2(function=0x80000008, eax=(48 << 16) | 0x30)
        k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, _cmd(T.KVM_TDX_INIT_VM, ctypes.addressof(init)))
        self.vcpu = self.fd(k.ioctl(vm, K.KVM_CREATE_VCPU, 0))
        # KVM_TDX_INIT_VCPU needs x2APIC in the vCPU's CPUID (kvm_apic_set_base)
        cpuid = T.with_cpuid_entries(K.kvm_cpuid2, 1)()
        cpuid.hdr.nent = 1
        cpuid.entries[0] = K.kvm_cpuid_entry2(function=1, ecx=1 << 21)
        k.ioctl(self.vcpu, T.KVM_SET_CPUID2, bytes(cpuid))
        k.ioctl(self.vcpu, K.KVM_MEMORY_ENCRYPT_OP, _cmd(T.KVM_TDX_INIT_VCPU, 0x1000))
        self.gmem = self.fd(k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD,
                                    K.kvm_create_guest_memfd(size=NPAGES * P)))
        _, hva = self.buf(NPAGES)
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=1, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=GPA, memory_size=NPAGES * P,
            userspace_addr=hva, guest_memfd=self.gmem))
        self.attrs(GPA, NPAGES * P, True)
        src, addr = self.buf(2)
        src[:4] = b"boot"
        region = T.kvm_tdx_init_mem_region(source_addr=addr, gpa=GPA, nr_pages=2)
        k.ioctl(self.vcpu, K.KVM_MEMORY_ENCRYPT_OP, _cmd(
            T.KVM_TDX_INIT_MEM_REGION, ctypes.addressof(region), T.KVM_TDX_MEASURE_MEMORY_REGION))
        k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, _cmd(T.KVM_TDX_FINALIZE_VM))
        self.guest = k.vm(vm).vcpus[0].guest

    def run(self):
        """KVM_RUN once; returns the exit reason. A TD's HLT halts inside KVM_RUN (the
        split irqchip's in-kernel LAPIC), so a scenario's guest ends with ``stop()``: the
        signal a VMM sends its vCPU thread, KVM_RUN failing with EINTR (KVM_EXIT_INTR)."""
        try:
            self.k.ioctl(self.vcpu, K.KVM_RUN, 0)
        except OSError as e:
            if e.errno != errno.EINTR:
                raise
            return K.KVM_EXIT_INTR
        return self.k.vm(self.vm).vcpus[0].run.exit_reason

    def close(self):
        for m in self.maps:
            m.close()
        self.maps = []
        for fd in reversed(self.fds):
            self.k.close(fd)
        self.fds = []


def launch(k):
    v = TdVmm(k)
    try:
        v.launch()
        v.guest.hlt()
        v.guest.stop()
        v.run()
    finally:
        v.close()


def conversion(k):
    v = TdVmm(k)
    try:
        v.launch()
        v.guest.tdx.accept(GPA + 6 * P)  # EPT violation: KVM AUGs the page
        v.guest.write(GPA + 6 * P, b"private", private=True)
        v.guest.hlt()
        v.guest.stop()
        v.run()
        v.attrs(GPA, P, False)  # an ADDed page to shared: BLOCK, TRACK, REMOVE
        v.attrs(GPA, P, True)
    finally:
        v.close()


def scenarios():
    """The ``kmock.fail_nth`` entry point: {name: (scenario, make_kernel)}."""
    return {"launch": (launch, make_kernel), "conversion": (conversion, make_kernel)}
