"""The plugin contract (kmock/hookspecs.py): entry-point discovery, VM types, ioctl tables,
kmock_vm_init refusal, and the kmock_syscall wrapper (tracing and fault injection)."""

import ctypes
import errno
import gc
import os
from importlib.metadata import entry_points

import pytest

import kmock
from kmock.testing.errnos import err
import kmock_sw_protected
from kmock.hookspecs import hookimpl
from kmock.kvm.vmtype import VmType
from kmock.uapi import kvm as K

P = 4096
GMEM = K.KVM_MEM_GUEST_MEMFD
FAKE_TYPE = 7
FAKE_CAP = 250  # a capability number 6.18 does not define


def open_kvm(k):
    return k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)


# --- discovery -----------------------------------------------------------------------------


def test_entry_point_registered():
    names = {ep.name: ep.value for ep in entry_points(group="kmock.plugins")}
    assert names.get("sw_protected") == "kmock_sw_protected"


def test_default_kernel_loads_sw_protected():
    with kmock.Kernel() as k:
        assert k.pm.is_registered(kmock_sw_protected) or any(
            p is kmock_sw_protected for p in k.pm.get_plugins())
        kvm = open_kvm(k)
        assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) == 0b11
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        assert k.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD_FLAGS) == 1


def test_no_plugins_offers_only_default():
    with kmock.Kernel(only_plugins=[]) as k:
        kvm = open_kvm(k)
        assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) == 0b1
        assert err(k.ioctl, kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM) == errno.EINVAL
        # /dev/kvm's system-level answers do not depend on plugins
        assert k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == 8
        k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_DEFAULT_VM)


def test_explicit_plugin_list():
    with kmock.Kernel(only_plugins=[kmock_sw_protected]) as k:
        assert k.ioctl(open_kvm(k), K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) == 0b11


def test_plugins_add_to_the_installed_ones():
    """Kernel(plugins=[...]) keeps the entry-point plugins (sw_protected) and adds."""
    arch = FakeArch()
    with kmock.Kernel(plugins=[arch]) as k:
        caps = k.ioctl(open_kvm(k), K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
        assert caps == 0b11 | (1 << FAKE_TYPE)
    with kmock.Kernel(only_plugins=[arch]) as k:
        caps = k.ioctl(open_kvm(k), K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
        assert caps == 0b1 | (1 << FAKE_TYPE)


# --- a test architecture -------------------------------------------------------------------


class FakeCmd(ctypes.Structure):
    """The fake architecture's KVM_MEMORY_ENCRYPT_OP argument (like struct kvm_sev_cmd)."""
    _fields_ = [("id", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("data", ctypes.c_uint64),
                ("error", ctypes.c_uint32), ("pad2", ctypes.c_uint32)]


CMD_INIT, CMD_MEASURE = 0, 1


class FakeVm(VmType):
    """A VM type with KVM_MEMORY_ENCRYPT_OP sub-commands (the registry) and a vm_init veto."""

    type = FAKE_TYPE
    name = "FAKE_CC_VM"
    has_private_mem = True
    mem_enc_cmd = FakeCmd

    def __init__(self):
        self.refuse = None
        self.inits = []

    def capabilities(self):
        return {FAKE_CAP: 42}

    def vm_init(self, vm):
        if self.refuse is not None:
            raise OSError(self.refuse, os.strerror(self.refuse))
        vm.arch = {"initialised": False, "measure": 0}
        self.inits.append(vm.type)

    def mem_enc_ops(self, kernel, file_type):
        return {CMD_INIT: self.cmd_init, CMD_MEASURE: self.cmd_measure} if file_type == "vm" else {}

    @staticmethod
    def cmd_init(f, cmd, arg):
        from kmock.kernel_util import copy_to_user

        vm = f.vm
        if vm.arch["initialised"]:
            cmd.error = 5
            copy_to_user(arg, cmd)
            raise OSError(errno.EINVAL, "already initialised")
        vm.arch["initialised"] = True
        return 0

    @staticmethod
    def cmd_measure(f, cmd, arg):
        from kmock.kernel_util import copy_to_user

        if not f.vm.arch["initialised"]:
            raise OSError(errno.EPERM, "not initialised")
        cmd.data = 0xC0FFEE
        copy_to_user(arg, cmd)
        return 0


class FakeArch:
    """A plugin object declaring the fake VM type."""

    def __init__(self):
        self.vmtype = FakeVm()

    @property
    def inits(self):
        return self.vmtype.inits

    @property
    def refuse(self):
        return self.vmtype.refuse

    @refuse.setter
    def refuse(self, v):
        self.vmtype.refuse = v

    @hookimpl
    def kmock_vm_types(self, kernel):
        return [self.vmtype]


@pytest.fixture
def arch():
    return FakeArch()


@pytest.fixture
def fk(arch):
    with kmock.Kernel(only_plugins=[kmock_sw_protected, arch]) as k:
        yield k


def test_plugin_adds_vm_type_with_capabilities(fk, arch):
    kvm = open_kvm(fk)
    assert fk.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES) == 0b11 | (1 << FAKE_TYPE)
    vm = fk.ioctl(kvm, K.KVM_CREATE_VM, FAKE_TYPE)
    assert fk.ioctl(vm, K.KVM_CHECK_EXTENSION, FAKE_CAP) == 42
    # generic answers follow the type's has_private_mem
    assert fk.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD_FLAGS) == 1
    assert fk.ioctl(vm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_MEMORY_ATTRIBUTES) == 8
    assert fk.ioctl(kvm, K.KVM_CHECK_EXTENSION, FAKE_CAP) == 0  # a VM-level cap only
    vm0 = fk.ioctl(kvm, K.KVM_CREATE_VM, 0)
    assert fk.ioctl(vm0, K.KVM_CHECK_EXTENSION, FAKE_CAP) == 0
    assert arch.inits == [FAKE_TYPE]  # vm_init is the VM type's: only its own VMs


def test_plugin_vm_ioctl_dispatch(fk):
    kvm = open_kvm(fk)
    vm = fk.ioctl(kvm, K.KVM_CREATE_VM, FAKE_TYPE)
    cmd = FakeCmd(id=CMD_MEASURE)
    assert err(fk.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, cmd) == errno.EPERM
    assert fk.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, FakeCmd(id=CMD_INIT)) == 0
    assert fk.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, cmd) == 0 and cmd.data == 0xC0FFEE
    again = FakeCmd(id=CMD_INIT)
    assert err(fk.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, again) == errno.EINVAL
    assert again.error == 5  # written back before the failure, as the SEV ioctls do
    assert err(fk.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, FakeCmd(id=99)) == errno.EINVAL
    assert err(fk.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, 0) == errno.EFAULT
    # the same request through an address and through bytes
    c = FakeCmd(id=CMD_MEASURE)
    assert fk.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, ctypes.addressof(c)) == 0 and c.data == 0xC0FFEE
    out = fk.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, bytes(FakeCmd(id=CMD_MEASURE)))
    assert FakeCmd.from_buffer_copy(out).data == 0xC0FFEE
    # other VM types: the handler answers as x86 does without mem_enc_ioctl
    vm0 = fk.ioctl(kvm, K.KVM_CREATE_VM, 0)
    assert err(fk.ioctl, vm0, K.KVM_MEMORY_ENCRYPT_OP, FakeCmd()) == errno.ENOTTY


def test_encrypt_op_without_plugin_enotty():
    """§4.9: no mem_enc_ioctl -> ENOTTY."""
    with kmock.Kernel() as k:
        vm = k.ioctl(open_kvm(k), K.KVM_CREATE_VM, 0)
        assert err(k.ioctl, vm, K.KVM_MEMORY_ENCRYPT_OP, FakeCmd()) == errno.ENOTTY


def test_vm_init_refuses(fk, arch):
    kvm = open_kvm(fk)
    fds_before = set(fk.fdtable.fds())
    gc.collect()  # unreferenced kernels of earlier tests close their fds when collected
    proc_before = set(os.listdir("/proc/self/fd"))
    arch.refuse = errno.ENOSPC
    assert err(fk.ioctl, kvm, K.KVM_CREATE_VM, FAKE_TYPE) == errno.ENOSPC
    assert set(fk.fdtable.fds()) == fds_before  # no fd was installed
    assert set(os.listdir("/proc/self/fd")) == proc_before
    vm0 = fk.ioctl(kvm, K.KVM_CREATE_VM, 0)  # other types are unaffected
    arch.refuse = None
    vm = fk.ioctl(kvm, K.KVM_CREATE_VM, FAKE_TYPE)
    assert vm != vm0


# --- kmock_syscall: tracing and fault injection ------------------------------------------


class Tracer:
    def __init__(self):
        self.calls = []

    @hookimpl(wrapper=True)
    def kmock_syscall(self, kernel, name, args):
        try:
            result = yield
        except OSError as e:
            self.calls.append((name, args, "errno", e.errno))
            raise
        self.calls.append((name, args, "ok", result))
        return result


class Injector:
    """Fails the n-th matching call with ``err`` before it reaches the kernel (fail-nth)."""

    def __init__(self, match, err):
        self.match = match
        self.err = err
        self.injected = 0

    @hookimpl(wrapper=True)
    def kmock_syscall(self, kernel, name, args):
        if self.match(name, args):
            self.injected += 1
            raise OSError(self.err, os.strerror(self.err))
        return (yield)


def test_tracing_sees_every_syscall():
    t = Tracer()
    with kmock.Kernel(plugins=[kmock_sw_protected, t]) as k:
        kvm = open_kvm(k)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 1)
        gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=4 * P))
        k.fallocate(gmem, 1, 0, P)
        assert err(k.read, gmem, 1) == errno.EINVAL
        k.fstat(gmem)
        d = k.dup(gmem)
        assert err(k.mmap, gmem, P, 3, 1) == errno.ENODEV
        k.close(d)
    names = [c[0] for c in t.calls]
    assert names == ["open", "ioctl", "ioctl", "fallocate", "read", "fstat", "dup", "mmap",
                     "close", "close", "close", "close"]  # the last three from close_all
    assert t.calls[0][2:] == ("ok", kvm)
    assert t.calls[1][1][1] == K.KVM_CREATE_VM and t.calls[1][3] == vm
    assert t.calls[4][2:] == ("errno", errno.EINVAL)
    assert t.calls[7][2:] == ("errno", errno.ENODEV)
    # close_all's closes are syscalls too: every fd handed out was closed exactly once
    closed = [c[1][0] for c in t.calls if c[0] == "close"]
    assert sorted(closed) == sorted({kvm, vm, gmem, d})


def test_injected_failure_reaches_caller_and_changes_nothing():
    inj = Injector(lambda n, a: n == "ioctl" and a[1] == K.KVM_SET_USER_MEMORY_REGION2,
                   errno.ENOMEM)
    with kmock.Kernel(plugins=[kmock_sw_protected, inj]) as k:
        kvm = open_kvm(k)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=4 * P))
        region = K.kvm_userspace_memory_region2(slot=1, flags=GMEM, guest_phys_addr=1 << 32,
                                                memory_size=4 * P, guest_memfd=gmem)
        assert err(k.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2, region) == errno.ENOMEM
        assert inj.injected == 1
        assert k.vm(vm).memslots() == []
        inj.match = lambda n, a: False
        # nothing was bound: the same call succeeds now, and a second one is EINVAL
        assert k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region) == 0
        assert err(k.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2, region) == errno.EINVAL


def test_injected_failure_on_fd_creating_calls():
    inj = Injector(lambda n, a: n in ("open", "dup") or (n == "ioctl" and a[1] in (
        K.KVM_CREATE_VM, K.KVM_CREATE_GUEST_MEMFD, K.KVM_CREATE_VCPU)), errno.EMFILE)
    with kmock.Kernel(plugins=[inj]) as k:
        gc.collect()
        before = set(os.listdir("/proc/self/fd"))
        assert err(k.open, "/dev/kvm", os.O_RDWR) == errno.EMFILE
        assert not k.fdtable and set(os.listdir("/proc/self/fd")) == before
        inj.match = lambda n, a: False
        kvm = open_kvm(k)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
        inj.match = lambda n, a: n == "ioctl" and a[1] == K.KVM_CREATE_VCPU
        assert err(k.ioctl, vm, K.KVM_CREATE_VCPU, 0) == errno.EMFILE
        inj.match = lambda n, a: False
        # vCPU 0 was not created: creating it works (else EEXIST)
        k.ioctl(vm, K.KVM_CREATE_VCPU, 0)


def test_wrapper_can_replace_result_and_order():
    """Two wrappers nest (the later-registered one outermost, as in pluggy)."""
    seen = []

    class W:
        def __init__(self, tag):
            self.tag = tag

        @hookimpl(wrapper=True)
        def kmock_syscall(self, kernel, name, args):
            seen.append(("in", self.tag))
            r = yield
            seen.append(("out", self.tag))
            if name == "ioctl" and args[1] == K.KVM_GET_API_VERSION and self.tag == "a":
                return r + 100
            return r

    with kmock.Kernel(plugins=[W("a"), W("b")]) as k:
        kvm = open_kvm(k)
        seen.clear()
        assert k.ioctl(kvm, K.KVM_GET_API_VERSION, 0) == 112
        assert seen == [("in", "b"), ("in", "a"), ("out", "a"), ("out", "b")]


def test_untraced_when_no_wrapper():
    with kmock.Kernel(only_plugins=[]) as k:
        assert not k._traced
    with kmock.Kernel(plugins=[Tracer()]) as k:
        assert k._traced
