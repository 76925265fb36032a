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


@scenario("enable_cap_sweep",
          "KVM_ENABLE_CAP of every capability number 0-259 with args[0] 0 and 1, on a fresh "
          "VM and on a fresh vCPU; then the cases of the two it found (X86_BUS_LOCK_EXIT on "
          "the VM, ENFORCE_PV_FEATURE_CPUID on the vCPU): modes, flags, after a vCPU")
def enable_cap_sweep(sys, rec):
    def enable(fd, label, cap, a0, flags=0):
        c = K.kvm_enable_cap(cap=cap, flags=flags)
        c.args[0] = a0
        rec.call(label, sys.ioctl, fd, K.KVM_ENABLE_CAP, c)

    for cap in range(260):
        for where in ("vm", "vcpu"):
            for a0 in (0, 1):
                kvm = sys.open("/dev/kvm", 2)
                vm = sys.ioctl(kvm, K.KVM_CREATE_VM, 0)
                cpu = sys.ioctl(vm, K.KVM_CREATE_VCPU, 0) if where == "vcpu" else None
                enable(vm if cpu is None else cpu, f"cap {cap} on {where}, args[0] {a0}", cap, a0)
                for f in (cpu, vm, kvm):
                    if f is not None:
                        sys.close(f)
    kvm = sys.open("/dev/kvm", 2)
    for a0 in (2, 3, 4, 1 << 63):
        vm = sys.ioctl(kvm, K.KVM_CREATE_VM, 0)
        enable(vm, f"BUS_LOCK_EXIT {a0:#x}", K.KVM_CAP_X86_BUS_LOCK_EXIT, a0)
        sys.close(vm)
    vm = sys.ioctl(kvm, K.KVM_CREATE_VM, 0)
    enable(vm, "BUS_LOCK_EXIT flags 1", K.KVM_CAP_X86_BUS_LOCK_EXIT, 1, flags=1)
    cpu = sys.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    enable(vm, "BUS_LOCK_EXIT after a vCPU", K.KVM_CAP_X86_BUS_LOCK_EXIT, 1)
    enable(cpu, "BUS_LOCK_EXIT on the vCPU", K.KVM_CAP_X86_BUS_LOCK_EXIT, 1)
    for a0 in (2, (1 << 64) - 1):
        enable(cpu, f"ENFORCE_PV_FEATURE_CPUID {a0:#x}", K.KVM_CAP_ENFORCE_PV_FEATURE_CPUID, a0)
    enable(cpu, "ENFORCE_PV_FEATURE_CPUID flags 1", K.KVM_CAP_ENFORCE_PV_FEATURE_CPUID, 1, flags=1)
    enable(vm, "ENFORCE_PV_FEATURE_CPUID on the VM", K.KVM_CAP_ENFORCE_PV_FEATURE_CPUID, 1)
    for f in (cpu, vm, kvm):
        sys.close(f)
