"""ONE_REG, KVM_GET_REG_LIST, KVM_ARM_VCPU_FINALIZE, KVM_GET/SET_VCPU_EVENTS and the
register reset of KVM_ARM_VCPU_INIT (arch/arm64/kvm/arm.c kvm_arch_vcpu_ioctl,
guest.c get/set_core_reg, core_reg_size_from_offset, copy_core_reg_indices,
get/set_sve_reg, set_sve_vls, reset.c kvm_reset_vcpu, kvm_arm_vcpu_finalize,
hypercalls.c kvm_arm_get/set_fw_reg)."""

import ctypes
import errno
import os

import pytest

import kmock
import kmock_arm64
from kmock.testing.errnos import err
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K
from kmock_arm64 import regs

from ._util import run_exit

PSCI = 1 << A.KVM_ARM_VCPU_PSCI_0_2
SVE = 1 << A.KVM_ARM_VCPU_SVE
U32, U64, U128 = A.KVM_REG_SIZE_U32, A.KVM_REG_SIZE_U64, A.KVM_REG_SIZE_U128
PSTATE = A.KVM_REG_ARM_CORE_REG(8 * 33)


def core(word, size=U64):
    return A.KVM_REG_ARM64 | A.KVM_REG_ARM_CORE | size | word


@pytest.fixture
def vm():
    k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
    kvm = k.open("/dev/kvm", os.O_RDWR)
    yield k, k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    k.close_all()


def new_vcpu(k, vm, vcpu_id=0, features=PSCI):
    fd = k.ioctl(vm, K.KVM_CREATE_VCPU, vcpu_id)
    if features is not None:
        init(k, fd, features)
    return fd


def init(k, fd, features=PSCI):
    i = A.kvm_vcpu_init(target=A.KVM_ARM_TARGET_GENERIC_V8)
    i.features[0] = features
    k.ioctl(fd, A.KVM_ARM_VCPU_INIT, i)


def get(k, fd, reg_id, size=8):
    buf = ctypes.create_string_buffer(size)
    k.ioctl(fd, A.KVM_GET_ONE_REG, A.kvm_one_reg(id=reg_id, addr=ctypes.addressof(buf)))
    return int.from_bytes(buf.raw, "little")


def put(k, fd, reg_id, value, size=8):
    buf = ctypes.create_string_buffer(value.to_bytes(size, "little"), size)
    k.ioctl(fd, A.KVM_SET_ONE_REG, A.kvm_one_reg(id=reg_id, addr=ctypes.addressof(buf)))


def reg_list(k, fd, n):
    buf = (ctypes.c_uint64 * (1 + n))(n)
    k.ioctl(fd, A.KVM_GET_REG_LIST, buf)
    return buf[0], list(buf[1:])


def test_before_init_every_register_ioctl_is_enoexec(vm):
    """kvm_arch_vcpu_ioctl: the init check comes before the argument is read."""
    k, v = vm
    fd = new_vcpu(k, v, features=None)
    bad = A.kvm_one_reg(id=A.KVM_REG_ARM64_PC, addr=0)
    assert err(k.ioctl, fd, A.KVM_GET_ONE_REG, bad) == errno.ENOEXEC
    assert err(k.ioctl, fd, A.KVM_SET_ONE_REG, bad) == errno.ENOEXEC
    assert err(k.ioctl, fd, A.KVM_GET_REG_LIST, A.kvm_reg_list()) == errno.ENOEXEC
    assert err(k.ioctl, fd, A.KVM_GET_VCPU_EVENTS, A.kvm_vcpu_events()) == errno.ENOEXEC
    assert err(k.ioctl, fd, A.KVM_SET_VCPU_EVENTS, A.kvm_vcpu_events()) == errno.ENOEXEC
    assert err(k.ioctl, fd, A.KVM_ARM_VCPU_FINALIZE, ctypes.c_int(A.KVM_ARM_VCPU_SVE)) \
        == errno.ENOEXEC


def test_reset_values_and_core_register_checks(vm):
    k, v = vm
    fd = new_vcpu(k, v, vcpu_id=0x15)
    assert get(k, fd, PSTATE) == 0x3C5  # VCPU_RESET_PSTATE_EL1: EL1h, DAIF masked
    assert get(k, fd, A.KVM_REG_ARM64_PC) == 0
    # reset_mpidr: bit 31, Aff0 = id[3:0], Aff1 = id[11:4]
    assert get(k, fd, A.ARM64_SYS_REG(3, 0, 0, 0, 5)) == 1 << 31 | 0x1 << 8 | 0x5
    put(k, fd, A.KVM_REG_ARM64_X(3), 0x1234)
    assert get(k, fd, A.KVM_REG_ARM64_X(3)) == 0x1234
    put(k, fd, core(84, U128), 1 << 100, 16)  # V0 (128-bit)
    assert get(k, fd, core(84, U128), 16) == 1 << 100
    put(k, fd, core(212, U32), 0x11, 4)  # FPSR
    # core_reg_addr == NULL: a size other than the field's, an unaligned index -> EINVAL
    assert err(get, k, fd, core(0, U32), 4) == errno.EINVAL
    assert err(get, k, fd, core(84, U64)) == errno.EINVAL
    assert err(get, k, fd, core(1)) == errno.EINVAL
    assert err(get, k, fd, core(82)) == errno.EINVAL  # padding before fp_regs
    # past struct kvm_regs (216 words) -> ENOENT
    assert err(get, k, fd, core(214, U64)) == errno.ENOENT
    assert err(get, k, fd, core(300)) == errno.ENOENT
    # bits 63:32 other than the size must be KVM_REG_ARM64's
    assert err(get, k, fd, A.KVM_REG_ARM64_PC | 1 << 40) == errno.EINVAL
    # set_core_reg: PSTATE modes of AArch32 or EL2 -> EINVAL, nothing written
    for mode in (0x10, 0x13, 0x9):
        assert err(put, k, fd, PSTATE, mode) == errno.EINVAL
    assert get(k, fd, PSTATE) == 0x3C5
    put(k, fd, PSTATE, 0x4)  # EL1t
    # system registers: 64-bit only, nothing outside op0..op2 -> ENOENT
    sctlr = A.ARM64_SYS_REG(3, 0, 1, 0, 0)
    put(k, fd, sctlr, 0x30D00800)
    assert get(k, fd, sctlr) == 0x30D00800
    assert err(get, k, fd, sctlr & ~U64 | U32, 4) == errno.ENOENT
    assert err(get, k, fd, sctlr | 1 << 16 + 12) == errno.ENOENT  # coproc 0x1013
    # KVM_ARM_VCPU_INIT resets every register (kvm_reset_vcpu)
    init(k, fd)
    assert (get(k, fd, A.KVM_REG_ARM64_X(3)), get(k, fd, PSTATE), get(k, fd, sctlr)) == \
        (0, 0x3C5, 0)


def test_get_reg_list(vm):
    k, v = vm
    fd = new_vcpu(k, v)
    assert err(reg_list, k, fd, 0) == errno.E2BIG
    n, _ = reg_list(k, fd, 1000)
    lst = A.kvm_reg_list(n=0)
    assert err(k.ioctl, fd, A.KVM_GET_REG_LIST, lst) == errno.E2BIG and lst.n == n  # written back
    _, ids = reg_list(k, fd, n)
    ids = ids[:n]
    # copy_core_reg_indices: 31 x, sp, pc, pstate, sp_el1, elr_el1, 5 spsr, 32 vregs, fpsr, fpcr
    assert ids[:75] == [i for i in ids[:75] if i & A.KVM_REG_ARM_COPROC_MASK == A.KVM_REG_ARM_CORE]
    assert ids[0] == A.KVM_REG_ARM64_X(0) and ids[74] == core(213, U32)
    assert ids[75:83] == [A.KVM_REG_ARM_PSCI_VERSION, A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1,
                          A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2,
                          A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3, A.KVM_REG_ARM_STD_BMAP,
                          A.KVM_REG_ARM_STD_HYP_BMAP, A.KVM_REG_ARM_VENDOR_HYP_BMAP,
                          A.KVM_REG_ARM_VENDOR_HYP_BMAP_2]  # the last one since 6.16
    assert ids[83:86] == [A.KVM_REG_ARM_TIMER_CTL, A.KVM_REG_ARM_TIMER_CNT,
                          A.KVM_REG_ARM_TIMER_CVAL]
    assert get(k, fd, A.KVM_REG_ARM_VENDOR_HYP_BMAP_2) == 0
    assert get(k, fd, A.KVM_REG_ARM_VENDOR_HYP_BMAP) == 0x3
    for i in ids:  # every listed register can be read and written back
        size = 1 << ((i & A.KVM_REG_SIZE_MASK) >> A.KVM_REG_SIZE_SHIFT)
        put(k, fd, i, get(k, fd, i, size), size)


def test_sve_needs_finalize(vm):
    """kvm_arm_vcpu_is_finalized gates KVM_RUN and KVM_GET_REG_LIST (EPERM); the vector
    lengths are set before KVM_ARM_VCPU_FINALIZE, the Z registers after it."""
    k, v = vm
    fd = new_vcpu(k, v, features=PSCI | SVE)
    fin = ctypes.c_int(A.KVM_ARM_VCPU_SVE)
    assert err(k.ioctl, fd, K.KVM_RUN, 0) == errno.EPERM
    assert err(reg_list, k, fd, 1000) == errno.EPERM
    assert err(get, k, fd, A.KVM_REG_ARM64_SVE_ZREG(0, 0), 256) == errno.EPERM
    assert err(get, k, fd, core(84, U128), 16) == errno.EINVAL  # vregs: use the Z regs
    assert get(k, fd, A.KVM_REG_ARM64_SVE_VLS, 64) == 0b11  # VQ 1 and 2 (256-bit)
    assert err(put, k, fd, A.KVM_REG_ARM64_SVE_VLS, 0b111, 64) == errno.EINVAL  # > host
    assert err(put, k, fd, A.KVM_REG_ARM64_SVE_VLS, 0b10, 64) == errno.EINVAL  # hole
    assert err(put, k, fd, A.KVM_REG_ARM64_SVE_VLS, 0, 64) == errno.EINVAL
    put(k, fd, A.KVM_REG_ARM64_SVE_VLS, 0b1, 64)
    assert err(k.ioctl, fd, A.KVM_ARM_VCPU_FINALIZE, ctypes.c_int(5)) == errno.EINVAL
    k.ioctl(fd, A.KVM_ARM_VCPU_FINALIZE, fin)
    assert err(k.ioctl, fd, A.KVM_ARM_VCPU_FINALIZE, fin) == errno.EPERM
    assert err(put, k, fd, A.KVM_REG_ARM64_SVE_VLS, 0b1, 64) == errno.EPERM  # too late
    z = (1 << 2047) | 0xABCD
    put(k, fd, A.KVM_REG_ARM64_SVE_ZREG(1, 0), z, 256)
    assert get(k, fd, A.KVM_REG_ARM64_SVE_ZREG(1, 0), 256) == 0xABCD  # VL 16 bytes kept
    assert err(get, k, fd, A.KVM_REG_ARM64_SVE_ZREG(1, 1), 256) == errno.ENOENT  # slice 1
    n, ids = reg_list(k, fd, 1000)
    assert n == 43 + 50 + 8 + 3 + len(regs.LISTED_SYSREGS)  # no vregs; VLS, Z, P, FFR
    assert A.KVM_REG_ARM64_SVE_VLS in ids and core(84, U128) not in ids
    k.vm(v).vcpus[0].guest.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR


def test_finalize_without_sve(vm):
    k, v = vm
    fd = new_vcpu(k, v)
    assert err(k.ioctl, fd, A.KVM_ARM_VCPU_FINALIZE, ctypes.c_int(A.KVM_ARM_VCPU_SVE)) \
        == errno.EINVAL
    assert err(get, k, fd, A.KVM_REG_ARM64_SVE_VLS, 64) == errno.ENOENT
    assert err(get, k, fd, A.KVM_REG_ARM64_SVE_ZREG(0, 0), 256) == errno.ENOENT
    assert err(get, k, fd, A.KVM_REG_ARM64_SVE | A.KVM_REG_ARM64 | U64 | 0x800) == errno.EINVAL


def test_psci_version_register(vm):
    """kvm_arm_set_fw_reg: 0.1 only without the PSCI_0_2 feature, 0.2-1.3 only with it;
    the guest's PSCI_VERSION call follows (kvm_psci_version)."""
    k, v = vm
    fd = new_vcpu(k, v)
    assert get(k, fd, A.KVM_REG_ARM_PSCI_VERSION) == A.KVM_ARM_PSCI_1_3
    assert err(put, k, fd, A.KVM_REG_ARM_PSCI_VERSION, A.KVM_ARM_PSCI_0_1) == errno.EINVAL
    assert err(put, k, fd, A.KVM_REG_ARM_PSCI_VERSION, 0x10004) == errno.EINVAL
    put(k, fd, A.KVM_REG_ARM_PSCI_VERSION, A.KVM_ARM_PSCI_1_0)
    fd1 = new_vcpu(k, v, 1)
    assert get(k, fd1, A.KVM_REG_ARM_PSCI_VERSION) == A.KVM_ARM_PSCI_1_0  # VM-wide
    g = k.vm(v).vcpus[0].guest
    ver = g.psci.version()
    g.stop()
    assert run_exit(k, fd) == K.KVM_EXIT_INTR and ver.result == A.KVM_ARM_PSCI_1_0
    # firmware registers: workaround levels above the host's, unknown bitmap bits -> EINVAL
    assert err(put, k, fd, A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1, 3) == errno.EINVAL
    put(k, fd, A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1, 1)
    assert err(put, k, fd, A.KVM_REG_ARM_STD_BMAP, 0x2) == errno.EINVAL
    put(k, fd, A.KVM_REG_ARM_STD_BMAP, 1)  # unchanged after the first run: accepted
    assert err(put, k, fd, A.KVM_REG_ARM_STD_BMAP, 0) == errno.EBUSY
    fd2 = k.ioctl(k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, 0), K.KVM_CREATE_VCPU, 0)
    init(k, fd2)
    put(k, fd2, A.KVM_REG_ARM_STD_BMAP, 0)  # before the VM's first run: accepted
    assert get(k, fd2, A.KVM_REG_ARM_STD_BMAP) == 0
    assert err(get, k, fd, A.KVM_REG_ARM_FW_REG(9)) == errno.ENOENT


def test_psci_version_0_1_without_the_feature(vm):
    k, v = vm
    fd = new_vcpu(k, v, features=0)
    assert get(k, fd, A.KVM_REG_ARM_PSCI_VERSION) == A.KVM_ARM_PSCI_0_1
    assert err(put, k, fd, A.KVM_REG_ARM_PSCI_VERSION, A.KVM_ARM_PSCI_1_0) == errno.EINVAL
    put(k, fd, A.KVM_REG_ARM_PSCI_VERSION, A.KVM_ARM_PSCI_0_1)


def test_cpu_on_reset_is_seen_by_one_reg(vm):
    """kvm_psci_vcpu_on queues KVM_REQ_VCPU_RESET; a register access applies it first."""
    k, v = vm
    fd0 = new_vcpu(k, v)
    fd1 = k.ioctl(v, K.KVM_CREATE_VCPU, 1)
    init(k, fd1, PSCI | 1 << A.KVM_ARM_VCPU_POWER_OFF)
    put(k, fd1, A.KVM_REG_ARM64_X(5), 7)
    on = k.vm(v).vcpus[0].guest.psci.cpu_on(0x1, entry=0x40080000, context_id=0x99)
    k.vm(v).vcpus[0].guest.stop()
    assert run_exit(k, fd0) == K.KVM_EXIT_INTR and on.result == 0
    assert get(k, fd1, A.KVM_REG_ARM64_PC) == 0x40080000
    assert (get(k, fd1, A.KVM_REG_ARM64_X(0)), get(k, fd1, A.KVM_REG_ARM64_X(5))) == (0x99, 0)


def test_vcpu_events(vm):
    """kvm_arm_vcpu_set_events / __kvm_arm_vcpu_get_events."""
    k, v = vm
    fd = new_vcpu(k, v)
    ev = A.kvm_vcpu_events()
    k.ioctl(fd, A.KVM_GET_VCPU_EVENTS, ev)
    assert (ev.exception.serror_pending, ev.exception.serror_has_esr) == (0, 1)
    bad = A.kvm_vcpu_events()
    bad.reserved[3] = 1
    assert err(k.ioctl, fd, A.KVM_SET_VCPU_EVENTS, bad) == errno.EINVAL
    bad = A.kvm_vcpu_events()
    bad.exception.pad[0] = 1
    assert err(k.ioctl, fd, A.KVM_SET_VCPU_EVENTS, bad) == errno.EINVAL
    s = A.kvm_vcpu_events()
    s.exception.serror_pending = s.exception.serror_has_esr = 1
    s.exception.serror_esr = 1 << 25  # beyond ISS
    assert err(k.ioctl, fd, A.KVM_SET_VCPU_EVENTS, s) == errno.EINVAL
    s.exception.serror_esr = 0x123
    k.ioctl(fd, A.KVM_SET_VCPU_EVENTS, s)
    ev = A.kvm_vcpu_events()
    k.ioctl(fd, A.KVM_GET_VCPU_EVENTS, ev)
    assert (ev.exception.serror_pending, ev.exception.serror_esr) == (1, 0x123)
    d = A.kvm_vcpu_events()
    d.exception.ext_dabt_pending = 1
    k.ioctl(fd, A.KVM_SET_VCPU_EVENTS, d)
    assert k.vm(v).vcpus[0].arch.injected == [("serror", 0x123), ("dabt", None)]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_CORE_IDS = None


@settings(max_examples=120, deadline=None)
@given(word=st.integers(0, 0x1FF), size=st.sampled_from([0, 1, 2, 3, 4, 5, 8]),
       sve=st.booleans())
def test_core_register_ids_against_a_model(word, size, sve):
    """get_core_reg over arbitrary ids: ENOENT past struct kvm_regs, EINVAL for an id that
    is not a field start of the field's size (vregs on SVE vCPUs included), else the value;
    the ids that succeed are exactly KVM_GET_REG_LIST's core ids."""
    k = kmock.Kernel("linux-arm64", plugins=[kmock_arm64])
    try:
        vmfd = k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, 0)
        fd = new_vcpu(k, vmfd, features=PSCI | (SVE if sve else 0))
        reg_id = A.KVM_REG_ARM64 | A.KVM_REG_ARM_CORE | size << 52 | word
        nbytes = 1 << size
        listed = set(regs.core_reg_ids(sve))
        if word >= 216 or word + nbytes // 4 >= 216:
            want = errno.ENOENT
        elif reg_id in listed:
            want = 0
        else:
            want = errno.EINVAL
        if want:
            assert err(get, k, fd, reg_id, nbytes) == want
        else:
            put(k, fd, reg_id, 0x3C5 if word == 66 else 1, nbytes)
            assert get(k, fd, reg_id, nbytes) == (0x3C5 if word == 66 else 1)
    finally:
        k.close_all()


def test_vcpu_enable_cap_is_einval_without_reading_the_argument(vm):
    """arm64 has no vCPU KVM_ENABLE_CAP: kvm_arch_vcpu_ioctl's default (EINVAL, not EFAULT)."""
    k, v = vm
    fd = new_vcpu(k, v)
    assert err(k.ioctl, fd, K.KVM_ENABLE_CAP, 8) == errno.EINVAL  # a bad pointer
