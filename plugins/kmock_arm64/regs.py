"""An arm64 vCPU's registers as KVM_GET/SET_ONE_REG and KVM_GET_REG_LIST see them.

Sources (arch/arm64/kvm/guest.c, reset.c, hypercalls.c; read):

* ``kvm_arm_get_reg``/``kvm_arm_set_reg``: bits 63:32 other than the size must be
  KVM_REG_ARM64 (EINVAL); then by KVM_REG_ARM_COPROC_MASK: CORE, FW / FW_FEAT_BMAP,
  SVE, the three timer registers, else a system register.
* core (``get_core_reg``/``set_core_reg``, ``core_reg_size_from_offset``): the id is a
  32-bit-word index into struct kvm_regs (216 words); past it -> ENOENT; an index that
  is not the start of a field, or a size other than the field's (x0-x30, sp, pc,
  pstate, sp_el1, elr_el1, spsr[5]: 64; vregs: 128; fpsr, fpcr: 32) -> EINVAL; the
  FPSIMD vregs of an SVE vCPU -> EINVAL (the SVE Z registers hold them); a PSTATE whose
  mode is not EL0t/EL1t/EL1h -> EINVAL (no AArch32 EL0/EL1 on the modelled host).
* ``kvm_reset_vcpu`` (KVM_ARM_VCPU_INIT, a PSCI CPU_ON's pending reset before a
  register access): core registers zero, PSTATE = EL1h with DAIF masked (0x3c5),
  system registers to reset values (MPIDR_EL1 = bit 31 | the vcpu_id's affinity,
  ``reset_mpidr``), then the CPU_ON entry point in PC and context id in x0.
* firmware registers (``kvm_arm_get/set_fw_reg``): KVM_REG_ARM_PSCI_VERSION reads
  ``kvm_psci_version``; a write must be 0.1 without the PSCI_0_2 feature, or 0.2 / 1.0
  / 1.1 / 1.2 / 1.3 with it, else EINVAL (1.2 and 1.3: [U] taken from the 6.13
  SYSTEM_OFF2 series, the file read stops at 1.1); the SMCCC workaround levels may not
  claim more than the host (EINVAL); the feature bitmaps refuse unknown bits (EINVAL)
  and changes after the VM's first run (EBUSY); KVM_REG_ARM_VENDOR_HYP_BMAP_2 (listed
  since 6.16, 0 at creation) [C: commit c0000e58c74e, named by the QEMU migration thread
  and the get-reg-list selftest]; anything else -> ENOENT.
* SVE (``get/set_sve_reg``, ``set_sve_vls``): KVM_REG_ARM64_SVE_VLS is writable until
  KVM_ARM_VCPU_FINALIZE (then EPERM); Z/P/FFR ids of a vCPU without SVE or of a slice
  > 0 -> ENOENT, other SVE ids -> EINVAL, before finalization -> EPERM.
* system registers (sys_regs.c ``kvm_arm_sys_reg_get/set_reg``): a size other than 64
  bits or bits outside op0..op2 -> ENOENT.

Choices: system-register *values* are not modelled (every well-formed encoding reads
back what was written, 0 at reset, MPIDR_EL1 aside), so ID registers read 0;
KVM_GET_REG_LIST lists core, SVE, firmware and timer registers exactly as the kernel
orders them and then a fixed set of EL1 context registers, not the host's full table.
The modelled host has 256-bit SVE (VQ 1 and 2), RAS (SError ESR) and is not affected
by the Spectre variants (workaround levels NOT_REQUIRED).
"""

import errno

from kmock.errors import oserror
from kmock.kernel_util import read_user_at, write_user_at
from kmock.uapi import arm64 as A

U64 = (1 << 64) - 1
#: sizeof(struct kvm_regs) / sizeof(u32): user_pt_regs (34 u64), sp_el1, elr_el1,
#: spsr[5], then the 16-byte aligned user_fpsimd_state (vregs[32], fpsr, fpcr, pad)
NR_CORE_WORDS = 216
_SPSR0, _VREG0, _FPSR, _FPCR = 72, 84, 212, 213
PSTATE_OFF = 66
PC_OFF = 64
#: VCPU_RESET_PSTATE_EL1: PSR_MODE_EL1h | A | I | F | D
RESET_PSTATE = 0x3C5
PSR_MODE_MASK = 0x1F
_PSTATE_MODES_A64 = (0x0, 0x4, 0x5)  # EL0t, EL1t, EL1h
#: the modelled host's SVE vector lengths, in quadwords (VL = 16 * vq bytes)
SVE_VQS = (1, 2)
SVE_MAX_VQ = max(SVE_VQS)
#: get_kernel_wa_level of an unaffected host: WA1 / WA3 NOT_REQUIRED (2), WA2 NOT_REQUIRED (3)
WA_LEVELS = {A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1: 2,
             A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2: 3,
             A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3: 2}
_WA2_ENABLED = 1 << 4
#: the bits each feature bitmap may hold (KVM_ARM_SMCCC_{STD,STD_HYP,VENDOR_HYP}_FEATURES:
#: TRNG; PV_TIME; FUNC_FEAT | PTP; VENDOR_HYP_BMAP_2, 6.16: DISCOVER_IMPL_VER | _CPUS)
FW_BMAP_FEATURES = {A.KVM_REG_ARM_STD_BMAP: 0x1, A.KVM_REG_ARM_STD_HYP_BMAP: 0x1,
                    A.KVM_REG_ARM_VENDOR_HYP_BMAP: 0x3, A.KVM_REG_ARM_VENDOR_HYP_BMAP_2: 0x3}
#: kvm_arm_init_hypercalls: every feature on at VM creation, VENDOR_HYP_BMAP_2 off
FW_BMAP_DEFAULTS = {**FW_BMAP_FEATURES, A.KVM_REG_ARM_VENDOR_HYP_BMAP_2: 0}
_PSCI_0_2_UP = (A.KVM_ARM_PSCI_0_2, A.KVM_ARM_PSCI_1_0, A.KVM_ARM_PSCI_1_1,
                A.KVM_ARM_PSCI_1_2, A.KVM_ARM_PSCI_1_3)
MPIDR_EL1 = A.ARM64_SYS_REG(3, 0, 0, 0, 5)
#: EL1 context registers KVM_GET_REG_LIST names after the firmware and timer ones
LISTED_SYSREGS = tuple(sorted(A.ARM64_SYS_REG(*e) for e in (
    (2, 0, 0, 2, 2),  # MDSCR_EL1
    (3, 0, 0, 0, 0), (3, 0, 0, 0, 5), (3, 0, 0, 0, 6),  # MIDR, MPIDR, REVIDR
    (3, 0, 1, 0, 0), (3, 0, 1, 0, 1), (3, 0, 1, 0, 2),  # SCTLR, ACTLR, CPACR
    (3, 0, 2, 0, 0), (3, 0, 2, 0, 1), (3, 0, 2, 0, 2),  # TTBR0, TTBR1, TCR
    (3, 0, 5, 1, 0), (3, 0, 5, 1, 1), (3, 0, 5, 2, 0),  # AFSR0, AFSR1, ESR
    (3, 0, 6, 0, 0), (3, 0, 7, 4, 0),  # FAR, PAR
    (3, 0, 10, 2, 0), (3, 0, 10, 3, 0), (3, 0, 12, 0, 0),  # MAIR, AMAIR, VBAR
    (3, 0, 13, 0, 1), (3, 0, 13, 0, 4), (3, 0, 14, 1, 0),  # CONTEXTIDR, TPIDR, CNTKCTL
    (3, 2, 0, 0, 0), (3, 3, 13, 0, 2), (3, 3, 13, 0, 3),  # CSSELR, TPIDR_EL0, TPIDRRO_EL0
)))
TIMER_REGS = (A.KVM_REG_ARM_TIMER_CTL, A.KVM_REG_ARM_TIMER_CNT, A.KVM_REG_ARM_TIMER_CVAL)
FW_REGS = (A.KVM_REG_ARM_PSCI_VERSION, A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1,
           A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2, A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3,
           A.KVM_REG_ARM_STD_BMAP, A.KVM_REG_ARM_STD_HYP_BMAP, A.KVM_REG_ARM_VENDOR_HYP_BMAP,
           A.KVM_REG_ARM_VENDOR_HYP_BMAP_2)
_ZREG_MIN = A.KVM_REG_ARM64_SVE_ZREG(0, 0)
_ZREG_MAX = A.KVM_REG_ARM64_SVE_ZREG(31, 31)
_PREG_MIN = A.KVM_REG_ARM64_SVE_PREG(0, 0)
_PREG_MAX = A.KVM_REG_ARM64_SVE_FFR(31)
_SYSREG_ID_BITS = (A.KVM_REG_ARCH_MASK | A.KVM_REG_SIZE_MASK | A.KVM_REG_ARM_COPROC_MASK
                   | A.KVM_REG_ARM64_SYSREG_FIELDS)


def reg_size(reg_id):
    """KVM_REG_SIZE: the register's size in bytes."""
    return 1 << ((reg_id & A.KVM_REG_SIZE_MASK) >> A.KVM_REG_SIZE_SHIFT)


def core_size(off, has_sve):
    """core_reg_size_from_offset: the field's size at 32-bit word ``off``, or None."""
    if off < _SPSR0 + 2 * 5:  # x0-x30, sp, pc, pstate, sp_el1, elr_el1, spsr[5]
        size = 8
    elif _VREG0 <= off < _FPSR:
        size = None if has_sve else 16
    elif off in (_FPSR, _FPCR):
        size = 4
    else:
        size = None  # the padding before fp_regs and after fpcr
    if size is None or off % (size // 4):
        return None
    return size


def core_reg_ids(has_sve):
    """copy_core_reg_indices: every valid core register id, in word order."""
    sizes = {4: A.KVM_REG_SIZE_U32, 8: A.KVM_REG_SIZE_U64, 16: A.KVM_REG_SIZE_U128}
    ids = []
    for off in range(NR_CORE_WORDS):
        size = core_size(off, has_sve)
        if size is not None:
            ids.append(A.KVM_REG_ARM64 | A.KVM_REG_ARM_CORE | sizes[size] | off)
    return ids


def sve_reg_ids():
    """copy_sve_reg_indices: the VLS pseudo-register first, then Z0-31, P0-15, FFR."""
    return ([A.KVM_REG_ARM64_SVE_VLS]
            + [A.KVM_REG_ARM64_SVE_ZREG(n, 0) for n in range(A.KVM_ARM64_SVE_NUM_ZREGS)]
            + [A.KVM_REG_ARM64_SVE_PREG(n, 0) for n in range(A.KVM_ARM64_SVE_NUM_PREGS)]
            + [A.KVM_REG_ARM64_SVE_FFR(0)])


class Registers:
    """vcpu->arch.ctxt and the SVE state of one vCPU."""

    def __init__(self, vcpu_id, mpidr_aff):
        self.vcpu_id = vcpu_id
        self.mpidr_aff = mpidr_aff
        self.has_sve = False
        #: VCPU_SVE_FINALIZED: KVM_ARM_VCPU_FINALIZE(KVM_ARM_VCPU_SVE) succeeded
        self.sve_finalized = False
        self.sve_max_vq = SVE_MAX_VQ
        self.reset()

    def reset(self, reset_state=None):
        """kvm_reset_vcpu: architectural reset values, then a CPU_ON's pc / x0."""
        self.core = bytearray(NR_CORE_WORDS * 4)
        self._put(PSTATE_OFF, 8, RESET_PSTATE)
        self.sysregs = {MPIDR_EL1: 1 << 31 | self.mpidr_aff}
        self.timer = dict.fromkeys(TIMER_REGS, 0)
        self.sve = {}  # kvm_vcpu_reset_sve: zeroed
        if reset_state is not None:
            self._put(PC_OFF, 8, reset_state["pc"])
            self._put(0, 8, reset_state["r0"])

    def _put(self, off, size, value):
        self.core[off * 4:off * 4 + size] = (value & ((1 << 8 * size) - 1)).to_bytes(
            size, "little")

    def core_value(self, off, size=8):
        return int.from_bytes(self.core[off * 4:off * 4 + size], "little")

    @property
    def pc(self):
        return self.core_value(PC_OFF)

    def x(self, n):
        return self.core_value(2 * n)

    def set_x(self, n, value):
        self._put(2 * n, 8, value)

    def mpidr(self):
        return self.sysregs.get(MPIDR_EL1, 0)

    # --- KVM_GET/SET_ONE_REG -------------------------------------------------------------

    def get(self, vm_arch, features, reg_id):
        """The register's bytes, or raise the kernel's errno."""
        cls = _check_id(reg_id)
        if cls == A.KVM_REG_ARM_CORE:
            off, size = self._core_field(reg_id)
            return bytes(self.core[off * 4:off * 4 + size])
        if cls in (A.KVM_REG_ARM_FW, A.KVM_REG_ARM_FW_FEAT_BMAP):
            return _u64(self._get_fw(vm_arch, features, reg_id))
        if cls == A.KVM_REG_ARM64_SVE:
            return self._get_sve(reg_id)
        if reg_id in self.timer:
            return _u64(self.timer[reg_id])
        _check_sysreg(reg_id)
        return _u64(self.sysregs.get(reg_id, 0))

    def set(self, vm_arch, features, reg_id, addr):
        cls = _check_id(reg_id)
        if cls == A.KVM_REG_ARM_CORE:
            off, size = self._core_field(reg_id)
            value = int.from_bytes(read_user_at(addr, 0, size), "little")
            if off == PSTATE_OFF and value & PSR_MODE_MASK not in _PSTATE_MODES_A64:
                raise oserror(errno.EINVAL)  # set_core_reg: no AArch32 EL0/EL1 here
            self._put(off, size, value)
            return
        if cls in (A.KVM_REG_ARM_FW, A.KVM_REG_ARM_FW_FEAT_BMAP):
            value = int.from_bytes(read_user_at(addr, 0, 8), "little")
            self._set_fw(vm_arch, features, reg_id, value)
            return
        if cls == A.KVM_REG_ARM64_SVE:
            self._set_sve(reg_id, addr)
            return
        if reg_id in self.timer:
            self.timer[reg_id] = int.from_bytes(read_user_at(addr, 0, 8), "little")
            return
        _check_sysreg(reg_id)
        self.sysregs[reg_id] = int.from_bytes(read_user_at(addr, 0, 8), "little")

    def _core_field(self, reg_id):
        off = reg_id & 0xFFFFFFFF & ~A.KVM_REG_ARM_CORE
        size = reg_size(reg_id)
        if off >= NR_CORE_WORDS or off + size // 4 >= NR_CORE_WORDS:
            raise oserror(errno.ENOENT)
        if core_size(off, self.has_sve) != size:
            raise oserror(errno.EINVAL)  # core_reg_addr() == NULL
        return off, size

    # firmware registers (hypercalls.c)

    def _get_fw(self, vm_arch, features, reg_id):
        if reg_id == A.KVM_REG_ARM_PSCI_VERSION:
            return psci_version(vm_arch, features)
        if reg_id in WA_LEVELS:
            return WA_LEVELS[reg_id]
        if reg_id in FW_BMAP_FEATURES:
            return vm_arch.fw_bmaps[reg_id]
        raise oserror(errno.ENOENT)

    def _set_fw(self, vm_arch, features, reg_id, val):
        wants_02 = bool(features & 1 << A.KVM_ARM_VCPU_PSCI_0_2)
        if reg_id == A.KVM_REG_ARM_PSCI_VERSION:
            if (val == A.KVM_ARM_PSCI_0_1 and not wants_02) or (val in _PSCI_0_2_UP
                                                                 and wants_02):
                vm_arch.psci_version = val
                return
            raise oserror(errno.EINVAL)
        if reg_id in (A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_1,
                      A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_3):
            if val & ~0xF or WA_LEVELS[reg_id] < val:
                raise oserror(errno.EINVAL)
            return
        if reg_id == A.KVM_REG_ARM_SMCCC_ARCH_WORKAROUND_2:
            level = val & 0xF
            if val & ~(0xF | _WA2_ENABLED) or (val & _WA2_ENABLED and level != 2):
                raise oserror(errno.EINVAL)
            if level not in (0, 1, 2, 3):
                raise oserror(errno.EINVAL)
            if WA_LEVELS[reg_id] < (0 if level in (0, 1) else 3):
                raise oserror(errno.EINVAL)
            return
        if reg_id in FW_BMAP_FEATURES:
            if val & ~FW_BMAP_FEATURES[reg_id]:
                raise oserror(errno.EINVAL)
            with vm_arch.lock:
                if vm_arch.has_ran_once and val != vm_arch.fw_bmaps[reg_id]:
                    raise oserror(errno.EBUSY)
                vm_arch.fw_bmaps[reg_id] = val
            return
        raise oserror(errno.ENOENT)

    # SVE (guest.c)

    def _sve_region(self, reg_id):
        """sve_reg_to_region: (key, kernel length, user length)."""
        if _ZREG_MIN <= reg_id <= _ZREG_MAX:
            klen, ulen = 16 * self.sve_max_vq, 256
        elif _PREG_MIN <= reg_id <= _PREG_MAX:
            klen, ulen = 2 * self.sve_max_vq, 32
        else:
            raise oserror(errno.EINVAL)
        if not self.has_sve or reg_id & 0x1F:
            raise oserror(errno.ENOENT)
        if not self.sve_finalized:
            raise oserror(errno.EPERM)
        return klen, ulen

    def _get_sve(self, reg_id):
        if reg_id == A.KVM_REG_ARM64_SVE_VLS:
            if not self.has_sve:
                raise oserror(errno.ENOENT)
            vqs = sum(1 << (vq - 1) for vq in SVE_VQS if vq <= self.sve_max_vq)
            return vqs.to_bytes(8 * A.KVM_ARM64_SVE_VLS_WORDS, "little")
        klen, ulen = self._sve_region(reg_id)
        return self.sve.get(reg_id, bytes(klen))[:klen] + bytes(ulen - klen)

    def _set_sve(self, reg_id, addr):
        if reg_id == A.KVM_REG_ARM64_SVE_VLS:
            if not self.has_sve:
                raise oserror(errno.ENOENT)
            if self.sve_finalized:
                raise oserror(errno.EPERM)  # "too late!"
            vqs = int.from_bytes(read_user_at(addr, 0, 8 * A.KVM_ARM64_SVE_VLS_WORDS), "little")
            max_vq = vqs.bit_length()
            if max_vq > SVE_MAX_VQ:
                raise oserror(errno.EINVAL)
            if any(bool(vqs >> (vq - 1) & 1) != (vq in SVE_VQS) for vq in range(1, max_vq + 1)):
                raise oserror(errno.EINVAL)
            if max_vq < 1:
                raise oserror(errno.EINVAL)
            self.sve_max_vq = max_vq
            return
        klen, _ = self._sve_region(reg_id)
        self.sve[reg_id] = read_user_at(addr, 0, klen)

    # KVM_GET_REG_LIST

    def reg_ids(self):
        """kvm_arm_copy_reg_indices: core, SVE, firmware, timer, then system registers."""
        ids = core_reg_ids(self.has_sve)
        if self.has_sve:
            ids += sve_reg_ids()
        return ids + list(FW_REGS) + list(TIMER_REGS) + list(LISTED_SYSREGS)


def psci_version(vm_arch, features):
    """kvm_psci_version: the VMM's choice (KVM_REG_ARM_PSCI_VERSION) or 1.3 with the
    PSCI_0_2 feature; 0.1 without it."""
    if features & 1 << A.KVM_ARM_VCPU_PSCI_0_2:
        return vm_arch.psci_version or A.KVM_ARM_PSCI_1_3
    return A.KVM_ARM_PSCI_0_1


def _check_id(reg_id):
    """kvm_arm_get/set_reg's first check; returns the coproc class."""
    if (reg_id & ~A.KVM_REG_SIZE_MASK) >> 32 != A.KVM_REG_ARM64 >> 32:
        raise oserror(errno.EINVAL)
    return reg_id & A.KVM_REG_ARM_COPROC_MASK


def _check_sysreg(reg_id):
    """index_to_params: a 64-bit KVM_REG_ARM64_SYSREG id with nothing past op0..op2."""
    if (reg_size(reg_id) != 8 or reg_id & A.KVM_REG_ARM_COPROC_MASK != A.KVM_REG_ARM64_SYSREG
            or reg_id & ~_SYSREG_ID_BITS & U64):
        raise oserror(errno.ENOENT)


def _u64(value):
    return (value & U64).to_bytes(8, "little")


def write_reg(addr, data):
    write_user_at(addr, 0, data)
