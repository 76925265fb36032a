"""KVM_MEMORY_ENCRYPT_REG_REGION / KVM_MEMORY_ENCRYPT_UNREG_REGION on every VM of the snp
platform (kmock_snp.svm_ops): a VM that is not an SEV guest answers ENOTTY.

x86.c kvm_arch_vm_ioctl copies the struct kvm_enc_region in (EFAULT) and calls
svm's sev_mem_enc_register_region / sev_mem_enc_unregister_region (sev.c, 6.18):

register     ``!sev_guest`` (INIT2 not done) -> ENOTTY; then sev_pin_memory: size 0 or
             addr + size wrapping -> EINVAL; the locked-page count above RLIMIT_MEMLOCK
             without CAP_IPC_LOCK -> ENOMEM; pin_user_pages_fast(FOLL_WRITE |
             FOLL_LONGTERM) pinning fewer pages than asked -> ENOMEM (not EFAULT). The
             region is appended; the same range may be registered twice. An SNP guest is
             a sev_guest: the call works there too, and so does a DEFAULT VM after the legacy
             KVM_SEV_INIT / KVM_SEV_ES_INIT.
unregister   ``!sev_guest`` -> ENOTTY; no region with exactly that addr and size ->
             EINVAL; else unpinned and forgotten.

sev_vm_destroy unpins what is left. kmock keeps the regions and the locked-page count
(``sev.pages_locked``); the pin itself is only probed (the pages must be mapped and
writable), kmock's choice: nothing else in the model looks at these pins.
"""

import errno
import resource

from kmock.errors import oserror
from kmock.kernel_util import copy_from_user
from kmock.kvm.stage2 import probe_user
from kmock.uapi.kvm import kvm_enc_region

from .state import sev_of

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
U64 = (1 << 64) - 1
CAP_IPC_LOCK = 14


def _capable_ipc_lock():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except OSError:
        pass
    return False


def _writable(addr, size):
    """Whether every page of [addr, addr + size) is mapped and writable (FOLL_WRITE)."""
    first = addr & ~(PAGE_SIZE - 1)
    end = (addr + size + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    if probe_user(first, end - first) < end - first:
        return False
    try:
        with open("/proc/self/maps") as f:
            spans = []
            for line in f:
                rng, perms = line.split()[:2]
                lo, hi = (int(x, 16) for x in rng.split("-"))
                if hi > first and lo < end:
                    spans.append((lo, hi, "w" in perms))
    except OSError:
        return True
    at = first
    for lo, hi, w in sorted(spans):
        if lo > at or not w:
            return False
        at = max(at, hi)
        if at >= end:
            return True
    return at >= end


def _region(f, arg):
    """kvm_arch_vm_ioctl's part of both region ioctls: the struct (EFAULT), then
    sev_guest(kvm) (ENOTTY). Returns (the VM's SEV state, the region)."""
    vm = f.vm
    vm.check_caller()
    r = copy_from_user(arg, kvm_enc_region)
    sev = sev_of(vm)
    if not sev.active:
        raise oserror(errno.ENOTTY)
    return sev, r


def register(f, arg):
    sev, r = _region(f, arg)
    addr, size = r.addr, r.size
    if size == 0 or addr + size > U64:  # sev_pin_memory
        raise oserror(errno.EINVAL)
    first = addr >> PAGE_SHIFT
    last = (addr + size - 1) >> PAGE_SHIFT
    npages = last - first + 1
    with sev.machine.lock:  # (kvm->lock)
        locked = sev.pages_locked + npages
        limit = resource.getrlimit(resource.RLIMIT_MEMLOCK)[0]
        if limit != resource.RLIM_INFINITY and locked > limit >> PAGE_SHIFT and \
                not _capable_ipc_lock():
            raise oserror(errno.ENOMEM)
        if npages > 0x7FFFFFFF:
            raise oserror(errno.EINVAL)
        if not _writable(addr, size):
            raise oserror(errno.ENOMEM)  # pin_user_pages_fast pinned fewer pages
        sev.pages_locked = locked
        sev.regions.append((addr, size, npages))
    return 0


def unregister(f, arg):
    sev, r = _region(f, arg)
    with sev.machine.lock:  # (kvm->lock)
        for i, (addr, size, npages) in enumerate(sev.regions):
            if addr == r.addr and size == r.size:
                del sev.regions[i]
                sev.pages_locked -= npages
                return 0
    raise oserror(errno.EINVAL)

