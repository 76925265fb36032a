"""KVM_MEMORY_ENCRYPT_OP and the region ioctls on VMs that are not SEV guests, and the
same ioctls on SEV (2) and SEV-ES (3) VMs, on the snp platform.

Sources (Linux 6.18): arch/x86/kvm/x86.c kvm_arch_vm_ioctl (KVM_MEMORY_ENCRYPT_OP and
KVM_MEMORY_ENCRYPT_(UN)REG_REGION go to kvm_x86_ops.mem_enc_*: the region struct is
copied in first, EFAULT); arch/x86/kvm/svm/svm.c (svm_x86_ops.mem_enc_ioctl =
sev_mem_enc_ioctl for every VM); arch/x86/kvm/svm/sev.c:
- sev_mem_enc_ioctl: NULL argument -> 0 before anything is read; copy_from_user (EFAULT);
  sev_snp_guest && id < 100 -> EPERM; KVM_SEV_ES_INIT without SEV-ES -> ENOTTY (``goto
  out``: no copy back); ids the switch lacks (SEND_UPDATE_VMSA 10, RECEIVE_UPDATE_VMSA
  14, CERT_EXPORT 19, and every id not in enum sev_cmd_id) -> EINVAL without the copy
  back; any handled id copies kvm_sev_cmd back, EFAULT when that fails;
- sev_guest_init (INIT / ES_INIT): vm_type != KVM_X86_DEFAULT_VM -> EINVAL, then
  __sev_guest_init: created_vcpus -> EINVAL, sev->active -> EINVAL, sev_asid_new:
  empty range -> ENOTTY, none free -> EBUSY;
- sev_guest_init2: !need_init (every DEFAULT VM) -> EINVAL before the data is read;
- snp_launch_start / snp_launch_finish: !sev_snp_guest -> ENOTTY; snp_launch_update:
  !sev_snp_guest || !snp_context -> EINVAL;
- legacy handlers: !sev_guest -> ENOTTY; sev_receive_update_data: EINVAL;
- sev_mem_enc_register_region / unregister_region: !sev_guest -> ENOTTY.
Documentation/virt/kvm/x86/amd-memory-encryption.rst: KVM_SEV_INIT2 "is only valid for
the SEV-family VM types"; the legacy KVM_SEV_INIT / KVM_SEV_ES_INIT "on a
KVM_X86_DEFAULT_VM".
"""

import ctypes
import errno
import gc
import mmap
import os

import pytest

import kmock
import kmock_snp
from kmock.uapi import kvm as K
from kmock.uapi import sev as S

from .snpenv import P, enc_op, kernel

DEFAULT, SW = K.KVM_X86_DEFAULT_VM, K.KVM_X86_SW_PROTECTED_VM
REG, UNREG = K.KVM_MEMORY_ENCRYPT_REG_REGION, K.KVM_MEMORY_ENCRYPT_UNREG_REGION


def _vm(k, vm_type=DEFAULT):
    kvm = k.open("/dev/kvm", os.O_RDWR)
    return k.ioctl(kvm, K.KVM_CREATE_VM, vm_type)


def _op(k, vm, cid, data=None):
    return enc_op(k, vm, cid, data)[1]


def _region(k, vm, req, addr, size):
    try:
        return k.ioctl(vm, req, K.kvm_enc_region(addr=addr, size=size))
    except OSError as e:
        return e.errno


def _readonly_cmd(cid):
    """A kvm_sev_cmd in a read-only page: a copy back fails with EFAULT."""
    m = mmap.mmap(-1, P)
    cmd = S.kvm_sev_cmd(id=cid)
    m[:ctypes.sizeof(cmd)] = bytes(cmd)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    assert libc.mprotect(addr, P, mmap.PROT_READ) == 0
    return m, addr


# --- a DEFAULT VM that is no SEV guest ----------------------------------------------------


@pytest.mark.parametrize("vm_type", [DEFAULT, SW])
def test_not_an_sev_guest(vm_type):
    k = kernel()
    vm = _vm(k, vm_type)
    assert k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, 0) == 0  # NULL argument: 0
    with pytest.raises(OSError) as e:
        k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, 8)
    assert e.value.errno == errno.EFAULT
    # INIT2: need_init is false before the data is read (data = NULL here)
    assert _op(k, vm, S.KVM_SEV_INIT2) == errno.EINVAL
    assert _op(k, vm, S.KVM_SEV_INIT2, S.kvm_sev_init()) == errno.EINVAL
    # SNP ids: !sev_snp_guest
    assert _op(k, vm, S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start()) == errno.ENOTTY
    assert _op(k, vm, S.KVM_SEV_SNP_LAUNCH_UPDATE, S.kvm_sev_snp_launch_update()) == errno.EINVAL
    assert _op(k, vm, S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish()) == errno.ENOTTY
    # legacy ids: !sev_guest -> ENOTTY, RECEIVE_UPDATE_DATA EINVAL, ids the switch lacks EINVAL
    for cid in range(S.KVM_SEV_LAUNCH_START, S.KVM_SEV_SEND_CANCEL + 1):
        want = (errno.EINVAL if cid in (S.KVM_SEV_RECEIVE_UPDATE_DATA, 10, 14, 19)
                else errno.ENOTTY)
        assert _op(k, vm, cid) == want, cid
    for cid in (23, 99, 103, 0xFFFFFFFF):
        assert _op(k, vm, cid) == errno.EINVAL, cid
    # the region ioctls: the struct first (EFAULT), then !sev_guest
    for req in (REG, UNREG):
        with pytest.raises(OSError) as e:
            k.ioctl(vm, req, 8)
        assert e.value.errno == errno.EFAULT
        assert _region(k, vm, req, 0x1000, P) == errno.ENOTTY
    # sev_guest_init: only a DEFAULT VM
    if vm_type == SW:
        assert _op(k, vm, S.KVM_SEV_INIT) == errno.EINVAL
        assert _op(k, vm, S.KVM_SEV_ES_INIT) == errno.EINVAL


def test_copy_back_or_not():
    """A handled id copies kvm_sev_cmd back (a read-only one: EFAULT replaces the
    command's errno); the switch's default and ES_INIT without SEV-ES skip it."""
    k = kernel(sev_vm_types=(K.KVM_X86_SEV_VM,))
    vm = _vm(k)
    for cid, want in ((S.KVM_SEV_INIT2, errno.EFAULT), (S.KVM_SEV_LAUNCH_START, errno.EFAULT),
                      (S.KVM_SEV_SNP_LAUNCH_FINISH, errno.EFAULT),
                      (S.KVM_SEV_CERT_EXPORT, errno.EINVAL), (77, errno.EINVAL),
                      (S.KVM_SEV_ES_INIT, errno.ENOTTY)):
        m, addr = _readonly_cmd(cid)
        with pytest.raises(OSError) as e:
            k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, addr)
        assert e.value.errno == want, cid
        m.close()


def test_legacy_init_makes_a_default_vm_an_sev_guest():
    k = kernel()
    vm = _vm(k)
    assert _op(k, vm, S.KVM_SEV_ES_INIT) == 0
    sev = k.vm(vm).arch
    assert (sev.active, sev.es, sev.snp, sev.ghcb_version) == (True, True, False, 1)
    assert 1 <= sev.asid <= k.setting("snp_asids")  # an SEV-ES ASID
    assert _op(k, vm, S.KVM_SEV_INIT) == errno.EINVAL  # sev->active
    assert _op(k, vm, S.KVM_SEV_INIT2, S.kvm_sev_init()) == errno.EINVAL  # !need_init
    # an SEV guest but not an SNP one: no EPERM, SNP ids as before
    assert _op(k, vm, S.KVM_SEV_RECEIVE_UPDATE_DATA) == errno.ENOTTY  # (flow not modelled)
    assert _op(k, vm, S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start()) == errno.ENOTTY
    # now a sev_guest: the regions work
    buf = mmap.mmap(-1, 2 * P)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert _region(k, vm, REG, addr, 2 * P) == 0
    assert _region(k, vm, UNREG, addr, P) == errno.EINVAL
    assert _region(k, vm, UNREG, addr, 2 * P) == 0
    # a plain SEV ASID for KVM_SEV_INIT, above the SEV-ES range
    vm2 = _vm(k)
    assert _op(k, vm2, S.KVM_SEV_INIT) == 0
    assert k.vm(vm2).arch.asid > k.setting("snp_asids") and not k.vm(vm2).arch.es


def test_legacy_init_refusals():
    k = kernel(sev_vm_types=(K.KVM_X86_SEV_VM,), sev_asids=1)
    vm = _vm(k)
    assert _op(k, vm, S.KVM_SEV_ES_INIT) == errno.ENOTTY  # !sev_es_enabled
    k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    assert _op(k, vm, S.KVM_SEV_INIT) == errno.EINVAL  # created_vcpus
    a, b = _vm(k), _vm(k)
    assert _op(k, a, S.KVM_SEV_INIT) == 0
    assert _op(k, b, S.KVM_SEV_INIT) == errno.EBUSY  # the one SEV ASID is taken
    assert _op(k, b, S.KVM_SEV_INIT) == errno.EBUSY  # nothing half-done by the failure
    assert k.vm(b).arch is None
    k.close(a)
    gc.collect()
    assert _op(k, b, S.KVM_SEV_INIT) == 0  # the ASID came back with the VM
    k2 = kernel(sev_asids=0)
    assert _op(k2, _vm(k2), S.KVM_SEV_INIT) == errno.ENOTTY  # min_sev_asid > max_sev_asid


def test_only_on_the_snp_platform():
    """A kernel without SEV: kvm_x86_ops.mem_enc_ioctl is NULL -> ENOTTY (the core's)."""
    k = kmock.Kernel("linux-6.18", plugins=[kmock_snp])
    vm = _vm(k)
    assert _op(k, vm, S.KVM_SEV_INIT) == errno.ENOTTY
    assert _region(k, vm, REG, 0x1000, P) == errno.ENOTTY


# --- SEV (2) and SEV-ES (3) VMs -----------------------------------------------------------


@pytest.mark.parametrize("vm_type", [K.KVM_X86_SEV_VM, K.KVM_X86_SEV_ES_VM])
def test_sev_and_sev_es_vms(vm_type):
    k = kernel()
    vm = _vm(k, vm_type)
    assert k.ioctl(vm, K.KVM_MEMORY_ENCRYPT_OP, 0) == 0
    for cid in (10, 14, 19, 23):  # not in the switch
        assert _op(k, vm, cid) == errno.EINVAL, cid
    assert _op(k, vm, S.KVM_SEV_INIT) == errno.EINVAL  # not a DEFAULT VM
    assert _op(k, vm, S.KVM_SEV_ES_INIT) == errno.EINVAL
    assert _region(k, vm, REG, 0x1000, P) == errno.ENOTTY  # INIT2 not done
    assert _op(k, vm, S.KVM_SEV_INIT2, S.kvm_sev_init()) == 0
    sev = k.vm(vm).arch
    assert sev.es == (vm_type == K.KVM_X86_SEV_ES_VM)
    assert sev.ghcb_version == (2 if sev.es else 0)  # GHCB_VERSION_DEFAULT for SEV-ES
    assert _op(k, vm, S.KVM_SEV_INIT2, S.kvm_sev_init()) == errno.EINVAL  # !need_init
    # an SEV guest, not an SNP one: no EPERM for legacy ids, SNP ids refused
    assert _op(k, vm, 10) == errno.EINVAL
    assert _op(k, vm, S.KVM_SEV_SNP_LAUNCH_START, S.kvm_sev_snp_launch_start()) == errno.ENOTTY
    assert _op(k, vm, S.KVM_SEV_SNP_LAUNCH_UPDATE, S.kvm_sev_snp_launch_update()) == errno.EINVAL
    assert _op(k, vm, S.KVM_SEV_SNP_LAUNCH_FINISH, S.kvm_sev_snp_launch_finish()) == errno.ENOTTY
    buf = mmap.mmap(-1, P)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    assert _region(k, vm, REG, addr, P) == 0
    assert _region(k, vm, UNREG, addr, P) == 0


def test_sev_es_vm_without_sev_es_on_the_host():
    """ES_INIT's ENOTTY comes before sev_guest_init's type check on any VM type."""
    k = kernel(sev_vm_types=(K.KVM_X86_SEV_VM,))
    assert _op(k, _vm(k, K.KVM_X86_SEV_VM), S.KVM_SEV_ES_INIT) == errno.ENOTTY


def test_snp_vm_unhandled_ids():
    """Before INIT2 an SNP VM is no SNP guest: ids 10/14/19 are the switch's EINVAL; after
    it every id below 100 is EPERM."""
    from .snpenv import Snp

    s = Snp(npages=4)
    assert s.op(S.KVM_SEV_CERT_EXPORT)[1] == errno.EINVAL
    s.init2()
    assert s.op(S.KVM_SEV_CERT_EXPORT)[1] == errno.EPERM
    assert s.op(S.KVM_SEV_INIT)[1] == errno.EPERM


def test_sev_types_as_the_host_reports_them():
    """sev_hardware_setup: KVM_X86_SEV_VM / KVM_X86_SEV_ES_VM are offered (KVM_CAP_VM_TYPES,
    KVM_CREATE_VM) only when the host has SEV / SEV-ES; a DEFAULT VM's ES_INIT follows
    sev_es_enabled."""
    k = kernel(sev_vm_types=())
    kvm = k.open("/dev/kvm", os.O_RDWR)
    types = k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
    assert types & (1 << K.KVM_X86_SNP_VM)
    for t in (K.KVM_X86_SEV_VM, K.KVM_X86_SEV_ES_VM):
        assert not types & (1 << t)
        with pytest.raises(OSError) as e:
            k.ioctl(kvm, K.KVM_CREATE_VM, t)
        assert e.value.errno == errno.EINVAL
    assert _op(k, _vm(k), S.KVM_SEV_ES_INIT) == errno.ENOTTY
