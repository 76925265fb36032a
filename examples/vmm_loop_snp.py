"""The VMM loop of examples/vmm_loop.py for an AMD SEV-SNP guest.

Launch, in the order of Documentation/virt/kvm/x86/amd-memory-encryption.rst, through
the syscall API only: open /dev/sev; KVM_CREATE_VM(KVM_X86_SNP_VM); guest_memfd-backed
RAM; KVM_SEV_INIT2 (before any vCPU); the vCPUs; KVM_SEV_SNP_LAUNCH_START (policy, the
/dev/sev fd); KVM_SET_MEMORY_ATTRIBUTES(PRIVATE) on the initial image;
KVM_SEV_SNP_LAUNCH_UPDATE, repeated while ``len`` is not 0 (the kernel may do part of
the range and write the rest back); KVM_SEV_SNP_LAUNCH_FINISH. Every command is
KVM_MEMORY_ENCRYPT_OP with a struct kvm_sev_cmd whose ``error`` carries the firmware
status.

The run loop is vmm_loop's (memory-fault and KVM_HC_MAP_GPA_RANGE exits convert memory
as QEMU does: attributes, then discard the other kind), plus KVM_EXIT_SYSTEM_EVENT of
type SEV_TERM: the guest asked to be terminated; the loop stops and reports the GHCB
termination reason.

Run it: ``python3 examples/vmm_loop_snp.py`` (needs the kmock_snp plugin).
"""

import ctypes
import errno
import importlib.util
import os
import pathlib

from kmock.uapi import kvm as K
from kmock.uapi import sev as S

_spec = importlib.util.spec_from_file_location(
    "vmm_loop", pathlib.Path(__file__).resolve().parent / "vmm_loop.py")
vmm_loop = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vmm_loop)

PAGE_SIZE = vmm_loop.PAGE_SIZE
U64 = vmm_loop.U64
#: SMT allowed, the must-be-one bit (SNP_POLICY_MASK_SMT | SNP_POLICY_MASK_RSVD_MBO)
DEFAULT_POLICY = S.SNP_POLICY_MASK_SMT | S.SNP_POLICY_MASK_RSVD_MBO


class SevError(OSError):
    """A failed KVM_MEMORY_ENCRYPT_OP: errno plus the firmware status of ``error``."""

    def __init__(self, what, err, fw_error):
        super().__init__(err, f"{what}: {os.strerror(err)} (firmware status {fw_error:#x})")
        self.fw_error = fw_error


class SnpVmm(vmm_loop.Vmm):
    def __init__(self, kernel):
        self.sev_fd = kernel.open("/dev/sev", os.O_RDWR | os.O_CLOEXEC)
        super().__init__(kernel, K.KVM_X86_SNP_VM)

    def sev_cmd(self, cid, data, what):
        cmd = S.kvm_sev_cmd(id=cid, data=ctypes.addressof(data), sev_fd=self.sev_fd)
        try:
            self.k.ioctl(self.vm_fd, K.KVM_MEMORY_ENCRYPT_OP, cmd)
        except OSError as e:
            raise SevError(what, e.errno, cmd.error) from None

    def init(self, ghcb_version=2):
        self.sev_cmd(S.KVM_SEV_INIT2, S.kvm_sev_init(ghcb_version=ghcb_version), "KVM_SEV_INIT2")

    def launch_start(self, policy=DEFAULT_POLICY):
        self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start(policy=policy),
                     "SNP_LAUNCH_START")

    def launch_update(self, gpa, image, page_type=S.KVM_SEV_SNP_PAGE_TYPE_NORMAL):
        """Make [gpa, gpa + len(image)) private and measure ``image`` into it."""
        size = -(-len(image) // PAGE_SIZE) * PAGE_SIZE
        self.k.ioctl(self.vm_fd, K.KVM_SET_MEMORY_ATTRIBUTES, K.kvm_memory_attributes(
            address=gpa, size=size, attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE))
        src = ctypes.create_string_buffer(bytes(image).ljust(size + PAGE_SIZE, b"\0"))
        addr = (ctypes.addressof(src) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
        ctypes.memmove(addr, bytes(image), len(image))
        u = S.kvm_sev_snp_launch_update(gfn_start=gpa // PAGE_SIZE, uaddr=addr, len=size,
                                        type=page_type)
        while u.len:
            before = u.len
            self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_UPDATE, u, "SNP_LAUNCH_UPDATE")
            if u.len == before:
                raise SevError("SNP_LAUNCH_UPDATE made no progress", errno.EIO, 0)

    def launch_finish(self):
        self.sev_cmd(S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish(),
                     "SNP_LAUNCH_FINISH")


def run_snp(vmm, vcpu, on_io=None, max_exits=100_000):
    """KVM_RUN until the guest halts or asks to be terminated.

    Returns ``(exits, term)``: the exit reasons, and the GHCB MSR of the termination
    request (None when the guest halted).
    """
    exits = []
    run = vcpu.run
    while len(exits) < max_exits:
        try:
            more = vmm_loop.run_until_halt(vmm, vcpu, on_io=on_io, max_exits=max_exits)
            return exits + more, None
        except RuntimeError as e:
            if run.exit_reason != K.KVM_EXIT_SYSTEM_EVENT:
                raise
            se = run.system_event
            if se.type != S.KVM_SYSTEM_EVENT_SEV_TERM:
                raise RuntimeError(f"unhandled system event {se.type}") from e
            exits.append(K.KVM_EXIT_SYSTEM_EVENT)
            return exits, se.data[0]
    raise RuntimeError("too many exits")


def term_reason(msr):
    """(reason set, reason code) of a GHCB MSR termination request."""
    return ((msr >> S.GHCB_MSR_TERM_REASON_SET_POS) & S.GHCB_MSR_TERM_REASON_SET_MASK,
            (msr >> S.GHCB_MSR_TERM_REASON_POS) & S.GHCB_MSR_TERM_REASON_MASK)


def boot(kernel, punch_before_run=False):
    """Launch a 2 MiB SNP guest whose first 4 pages are a measured image, and run a
    scripted guest that validates, uses and shares memory. With ``punch_before_run`` the
    VMM wrongly punches a measured page first: the guest's next private access takes
    #VC PAGE_NOT_VALIDATED and the guest asks to be terminated."""
    ram_gpa = 1 << 32
    vmm = SnpVmm(kernel)
    ram = vmm.add_ram(0, ram_gpa, 2 << 20, private=True)
    vmm.init()
    vcpu = vmm.create_vcpu(0)
    vmm.launch_start()
    vmm.launch_update(ram_gpa, b"SNP boot image".ljust(4 * PAGE_SIZE, b"."))
    vmm.launch_finish()
    vmm.enable_map_gpa_range_exit()
    if punch_before_run:
        kernel.fallocate(ram.gmem_fd, vmm_loop.FALLOC_FL_KEEP_SIZE | vmm_loop.FALLOC_FL_PUNCH_HOLE,
                         0, PAGE_SIZE)
    # the guest's code (kmock's scripted guest stands for it)
    g = kernel.vm(vmm.vm_fd).vcpus[0].guest
    boot_read = g.read(ram_gpa, 14, private=True)
    page = ram_gpa + 8 * PAGE_SIZE
    psc = g.snp.psc_msr(page, private=True)  # accept a page: PSC, then PVALIDATE
    val = g.snp.pvalidate(page)
    g.write(page, b"private data", private=True)
    shared = page  # then share it with the host: rescind the validation, PSC to shared
    g.snp.pvalidate(shared, validate=False)
    g.snp.psc([(shared // PAGE_SIZE, False)])
    g.write(shared, b"hello host", private=False)
    g.outb(0xE9, ord("!"))
    g.hlt()
    out = []
    exits, term = run_snp(vmm, vcpu, on_io=lambda port, is_out, data: out.append(data))
    return {"vmm": vmm, "ram": ram, "exits": exits, "term": term, "console": b"".join(out),
            "boot_read": boot_read.result, "psc": psc.result, "pvalidate": val.result}


def demo():
    import kmock

    try:
        import kmock_snp
    except ImportError:
        raise SystemExit("the kmock_snp plugin is not installed") from None
    for punch in (False, True):
        with kmock.Kernel("linux-6.18-snp", plugins=[kmock_snp]) as kernel:
            r = boot(kernel, punch_before_run=punch)
            print("exits:", r["exits"])
            if r["term"] is None:
                print("guest read its image:", r["boot_read"], "console:", r["console"],
                      "host sees:", r["ram"].host_view((1 << 32) + 8 * PAGE_SIZE, 10))
            else:
                print("guest asked to terminate, reason (set, code):", term_reason(r["term"]))
                for v in kernel.violations:
                    print(" ", v)


if __name__ == "__main__":
    demo()
