"""A test-only architecture plugin that implements every hook and every VmType callback
of the contract and records each call, so tests can assert when each one runs."""

import ctypes
import errno

from kmock.hookspecs import hookimpl
from kmock.kernel_util import copy_to_user
from kmock.kvm.guest import Action
from kmock.kvm.vmtype import VmType
from kmock.platforms import Platform

REC_TYPE = 9
REC_CAP = 251
GPA_ALIAS_BIT = 1 << 40  # "shared" alias of a gpa, like TDX's shared bit
PRIVATE_IOCTL = 0xAEF0  # a vm ioctl only this type has
VCPU_IOCTL = 0xAEF1


class RecCmd(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("data", ctypes.c_uint64)]


class Ping(Action):
    """A guest action of the recording architecture: completes with the vCPU id."""

    kind = "ping"

    def step(self, vcpu):
        return self.finish(("pong", vcpu.id))


class RecGuest:
    """``vcpu.guest.rec``: the recording architecture's guest actions."""

    def __init__(self, script):
        self.script = script

    def ping(self):
        return self.script.add(Ping())


class RecVm(VmType):
    type = REC_TYPE
    name = "KVM_X86_RECORDING_VM"
    platforms = ("rec",)
    has_private_mem = True
    mem_enc_cmd = RecCmd
    guest_actions = {"rec": RecGuest}

    def __init__(self, log):
        self.log = log
        self.veto_errno = None
        self.refuse_slot = None

    def _rec(self, *what):
        self.log.append(what)

    def capabilities(self):
        return {REC_CAP: 7}

    def ioctls(self, kernel, file_type):
        if file_type == "vm":
            return {PRIVATE_IOCTL: lambda f, arg: 0x5EC}
        if file_type == "vcpu":
            return {VCPU_IOCTL: lambda f, arg: f.vcpu.id + 100}
        return {}

    def mem_enc_ops(self, kernel, file_type):
        def op(f, cmd, arg):
            self._rec("mem_enc", file_type, cmd.id)
            cmd.data = 0xABC
            copy_to_user(arg, cmd)
            return 0
        return {1: op}

    def mem_enc_check(self, file, cmd):
        self._rec("mem_enc_check", cmd.id)
        if cmd.flags:
            raise OSError(errno.EINVAL, "flags")

    def vm_init(self, vm):
        self._rec("vm_init")
        vm.arch = {"rec": True}

    def vm_destroy(self, vm):
        self._rec("vm_destroy")

    def vcpu_create(self, vcpu):
        self._rec("vcpu_create", vcpu.id)

    def memslot_prepare(self, vm, old, new, change):
        self._rec("memslot_prepare", change)
        if self.refuse_slot is not None and change == "create":
            raise OSError(self.refuse_slot, "refused")

    def memslot_commit(self, vm, old, new, change):
        self._rec("memslot_commit", change)

    def run_enter(self, vcpu):
        self._rec("run_enter", vcpu.id)
        return None

    def run_exit(self, vcpu, result):
        self._rec("run_exit", vcpu.id, result if isinstance(result, int) else result.errno)

    def gmem_create(self, vm, size, flags):
        self._rec("gmem_create", size, flags)

    def gmem_veto(self, vm, event):
        self._rec("veto", event.reason, event.start, event.end)
        return self.veto_errno

    def gmem_invalidate(self, vm, event):
        self._rec("gmem_invalidate", event.reason, event.start, event.end)

    def gmem_make_shared(self, vm, inode, start, end, pfn):
        self._rec("make_shared", start, end, pfn - inode.pfn_base)

    def gmem_make_private(self, vm, inode, start, end, pfn):
        self._rec("make_private", start, end, pfn - inode.pfn_base)

    def stage2_map(self, vm, gfn, pfn, npages, private):
        self._rec("stage2_map", gfn, npages, private)

    def stage2_zap(self, vm, runs):
        self._rec("stage2_zap", tuple((g, n, p) for g, _, n, p, _ in runs))

    def gpa_alias(self, vm, gpa):
        if gpa & GPA_ALIAS_BIT:
            return gpa & ~GPA_ALIAS_BIT, False
        return gpa, None

    def explain_host_fault(self, vm, inode, index):
        return f"recording arch: page {index} is the guest's"


class RecordingPlugin:
    """Registers the recording VM type, its platform, a profile and a device."""

    def __init__(self):
        self.log = []
        self.syscalls = []
        self.vmtype = RecVm(self.log)

    @hookimpl
    def kmock_vm_types(self, kernel):
        self.log.append(("kmock_vm_types",))
        return [self.vmtype]

    @hookimpl
    def kmock_platforms(self, kernel):
        return [Platform("rec", "x86", "the recording test platform",
                         settings=(("rec_setting", 3),))]

    @hookimpl
    def kmock_profiles(self):
        from kmock import profiles

        import dataclasses

        return [dataclasses.replace(profiles.get("linux-6.18"), name="linux-rec",
                                    description="test", platform="rec")]

    @hookimpl
    def kmock_ioctls(self, kernel, file_type):
        self.log.append(("kmock_ioctls", file_type))
        return {}

    @hookimpl
    def kmock_devices(self, kernel):
        self.log.append(("kmock_devices",))
        return {}

    @hookimpl
    def kmock_snapshot(self, kernel, snapshot):
        snapshot["rec"] = len(self.log)

    @hookimpl(wrapper=True)
    def kmock_syscall(self, kernel, name, args):
        self.syscalls.append(name)
        return (yield)
