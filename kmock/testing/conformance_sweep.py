"""The ioctl sweep: every KVM ioctl number kmock.uapi names (linux/kvm.h and asm/kvm.h), with
a zeroed argument, on /dev/kvm, on a fresh VM fd and on a fresh vCPU fd. What it catches is
an ioctl the real kernel answers and kmock does not (ENOTTY or EINVAL where the kernel
dispatches), or the reverse: the first errno of a zeroed call is almost always the
dispatch's or the first check's. The sweep of this machine found twelve such gaps, each
now modelled with its own scenario (KVM_CREATE_DEVICE, KVM_INTERRUPT, KVM_TRANSLATE,
KVM_SET_CPUID, the vCPU attributes, ONE_REG, KVM_SET_PMU_EVENT_FILTER,
KVM_GET_EMULATED_CPUID, KVM_RESET_DIRTY_RINGS, KVM_MEMORY_ENCRYPT_OP on a vCPU).

Not called: the ioctls that would run or create something the sweep cannot undo cheaply
(KVM_RUN, KVM_CREATE_VM, KVM_CREATE_VCPU) and the ones that inject events (KVM_SMI,
KVM_NMI)."""

from ..uapi import kvm as K
from ..uapi import x86 as X
from .conformance import scenario

SKIP = frozenset({"KVM_RUN", "KVM_CREATE_VM", "KVM_CREATE_VCPU", "KVM_SMI", "KVM_NMI"})


def kvm_ioctls():
    """{number: name} of the KVM ioctls (type 0xAE) that kmock.uapi names, first name kept."""
    out = {}
    for mod in (K, X):
        for name in sorted(dir(mod)):
            v = getattr(mod, name)
            if name.startswith("KVM_") and type(v) is int and (v >> 8) & 0xFF == K.KVMIO \
                    and name not in SKIP:
                out.setdefault(v, name)
    return out


@scenario("ioctl_sweep",
          "every KVM ioctl kmock.uapi names, with a zeroed argument (a zeroed buffer of the "
          "size the number encodes, or 0), on /dev/kvm, a fresh VM fd and a fresh vCPU fd")
def ioctl_sweep(sys, rec):
    for req, name in sorted(kvm_ioctls().items()):
        size = (req >> 16) & 0x3FFF
        for where in ("dev", "vm", "vcpu"):
            kvm = sys.open("/dev/kvm", 2)
            vm = sys.ioctl(kvm, K.KVM_CREATE_VM, 0)
            cpu = sys.ioctl(vm, K.KVM_CREATE_VCPU, 0)
            fd = {"dev": kvm, "vm": vm, "vcpu": cpu}[where]
            arg = bytearray(max(size, 8)) if req >> 30 else 0
            rec.call(f"{name} on {where}", sys.ioctl, fd, req, arg)
            for f in (cpu, vm, kvm):
                sys.close(f)
