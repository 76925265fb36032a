"""KVM_VM_TYPE_ARM_REALM: a realm VM, its lifecycle and what the RMM does to it.

Lifecycle (KVM's ``enum realm_state``, v14 14/44, 18/44, 28/44):
NONE (KVM_CREATE_VM) -> NEW (the RD exists: first POPULATE or first KVM_RUN) -> ACTIVE
(first KVM_RUN: RECs, RTT_INIT_RIPAS over the guest_memfd memslots, REALM_ACTIVATE)
-> DYING (the VM's last reference goes) -> DEAD. A failed activation leaves it DEAD.

Memory (the contract's callbacks, one call per run):
* ``stage2_map``: a realm fault KVM resolves. Protected: delegate + RTT_DATA_MAP of the
  UNASSIGNED entries (lazy backing; RIPAS kept). Unprotected: RTT_UNPROT_MAP at the
  alias (the IPA with the top bit set).
* ``stage2_zap``: unprotected mappings go (RTT_UNPROT_UNMAP). Protected data is
  destroyed by ``gmem_invalidate`` (and memslot deletion), which also sees populated
  pages KVM never mapped in its own stage-2.
* ``gmem_invalidate``: pages going away or becoming shared: RTT_DATA_UNMAP + undelegate;
  a RAM page the realm did not release becomes RIPAS DESTROYED (a violation).
* ``guest_access_early``: the RTT's verdict first: RIPAS EMPTY -> SEA in the realm (recorded);
  DESTROYED -> no progress: KVM_RUN returns -EINTR / KVM_EXIT_INTR (recorded; kmock
  stands for the signal that would end KVM's endless abort loop, docs/arch/cca.md §6).
* ``host_access`` / ``explain_host_fault``: a host access to a Realm-PAS granule is a
  granule protection fault (kmock.SigBus). ``dma_access``: the SMMU's granule protection
  check refuses DMA to Realm PAS (kmock.DmaFault).
"""

import errno
import weakref

from kmock.errors import oserror
from kmock.kvm.stage2 import PAGE_SHIFT
from kmock.locks import RLock
from kmock.uapi import arm64 as A
from kmock.uapi import kvm as K
from kmock_arm64 import Arm64Vm, Arm64VmState
from kmock_arm64.vcpu import Arm64VcpuState

from . import kvm_rmi, rtt
from .guest import CcaGuest
from .rtt import (GRANULE_SIZE, _DESTROYED, _EMPTY, _RAM, GranuleTable, _RealmState, _Ripas,
                  _RmiStatus)
from .series import series_of

_ACTIVE = _RealmState.ACTIVE  # (every KVM_RUN compares with it: a module global)

#: the granule table spans every frame of the Kernel's frame space (kmock.physmem)
NR_GRANULES = 1 << 52
RSI_CHANGE_DESTROYED = rtt.RSI_CHANGE_DESTROYED

#: the host call behind each guest_memfd invalidation reason, for violation messages
HOST_CALLS = {"punch_hole": "fallocate(PUNCH_HOLE) on the guest_memfd",
              "release": "close of the guest_memfd", "memory_failure": "memory failure",
              "vm_attributes": "KVM_SET_MEMORY_ATTRIBUTES(shared)",
              "convert_shared": "guest_memfd conversion to shared"}

#: VM-level capabilities a realm reads as 0: arm64 ones outside kvm_realm_ext_allowed
#: (v14 15/44; v12 also allowed PMU_V3)
REALM_DISALLOWED = (A.KVM_CAP_MP_STATE, A.KVM_CAP_ONE_REG, A.KVM_CAP_READONLY_MEM,
                    A.KVM_CAP_ARM_SET_DEVICE_ADDR, A.KVM_CAP_VCPU_ATTRIBUTES, A.KVM_CAP_ARM_SVE,
                    A.KVM_CAP_ARM_EL1_32BIT, K.KVM_CAP_IMMEDIATE_EXIT)


class RealmVmState(Arm64VmState):
    """vm.arch of a realm."""

    def __init__(self, ipa_bits):
        super().__init__(ipa_bits)
        self.lock = RLock()  # (kmock.locks: threading.RLock's behaviour, cheaper to take)
        self.state = _RealmState.NONE
        #: the RMM's realm (rtt.Realm) once the RD exists
        self.realm = None
        self.rd_pa = None
        #: (ipa_start, ipa_end, host call) of RAM the host destroyed under the realm
        self.destroyed = []

    @property
    def unprotected_bit(self):
        return 1 << (self.ipa_bits - 1)


class RealmVcpuState(Arm64VcpuState):
    """vcpu.arch of a REC: the RMM's Rec, and the answer of a completed RSI call."""

    def __init__(self):
        super().__init__()
        self.rec = None
        self.rec_pa = None
        self.rsi_result = None


class RealmVm(Arm64Vm):
    name = "KVM_VM_TYPE_ARM_REALM"
    is_realm = True
    platforms = ("cca",)
    has_private_mem = True
    vgic_models = (A.KVM_DEV_TYPE_ARM_VGIC_V3,)  # kvm_vgic_create: V2 on a realm -> ENODEV
    guest_actions = {**Arm64Vm.guest_actions, "cca": CcaGuest}
    iommu_conversion_policy = "split"

    def __init__(self, kernel):
        super().__init__(kernel)
        self.kernel = kernel
        self.series = series_of(kernel)
        self.type = self.series.vm_type_realm
        self.type_bits = self.type
        self.ipa_limit = self.series.rmm_ipa_limit
        #: the machine's granule protection table (one per Kernel)
        self.granules = GranuleTable(NR_GRANULES)
        self.pool = kvm_rmi.HostPool(kernel, self.granules)
        self.vms = weakref.WeakSet()

    def __repr__(self):
        return f"<VmType {self.name} ({self.type:#x}) {self.series.revision}>"

    # --- questions ----------------------------------------------------------------------

    def capabilities(self):
        caps = {c: 0 for c in REALM_DISALLOWED}
        if self.series.revision != "v12":
            caps[A.KVM_CAP_ARM_PMU_V3] = 0
        caps[self.series.cap_arm_rmi] = int(self.series.rmi_available)
        return caps

    def gmem_slot_ok(self, vm, slot):
        return True  # a realm may bind slots that are not gmem-only (v14 29/44)

    def vm_state(self, ipa_bits):
        return RealmVmState(ipa_bits)

    def vcpu_state(self, vcpu):
        return RealmVcpuState()

    # --- lifecycle -----------------------------------------------------------------------

    def vm_init(self, vm):
        if not self.series.rmi_available:
            raise oserror(errno.EINVAL)
        super().vm_init(vm)
        self.vms.add(vm)

    def vcpu_create(self, vcpu):
        if vcpu.vm.arch.state >= _RealmState.ACTIVE:
            raise oserror(errno.EBUSY)  # RECs are created at activation [U]
        super().vcpu_create(vcpu)

    def vcpu_init_check(self, vcpu, features):
        if features & 1 << A.KVM_ARM_VCPU_EL1_32BIT:
            raise oserror(errno.EINVAL)  # kvm_vcpu_init_check_features (v14 19/44)

    def one_reg_check(self, vcpu, reg_id):
        """A realm's registers are the RMM's: only X0-X30 and PC may be set (v14 31/44)."""
        allowed = reg_id == A.KVM_REG_ARM64_PC or any(
            reg_id == A.KVM_REG_ARM64_X(n) for n in range(31))
        if not allowed:
            raise oserror(errno.EINVAL)

    def ensure_created(self, vm):
        """realm_ensure_created (28/44): NONE -> create the RD (NEW); NEW -> nothing; DEAD
        -> ENXIO; ACTIVE or DYING -> EBUSY."""
        arch = vm.arch
        with arch.lock:
            st = arch.state
            if st == _RealmState.NEW:
                return
            if st == _RealmState.DEAD:
                raise oserror(errno.ENXIO)
            if st != _RealmState.NONE:
                raise oserror(errno.EBUSY)
            rd = self.pool.take()
            if kvm_rmi.rmi_failed(self.kernel, "realm_create"):
                self.pool.give(rd)
                raise oserror(errno.ENXIO)
            ok, realm = rtt.Realm.create(
                self.granules, rd, arch.ipa_bits,
                init_ripas_skips_assigned_ram=self.series.init_ripas_skips_assigned_ram)
            if ok.status != _RmiStatus.SUCCESS:
                self.pool.give(rd)
                raise oserror(errno.ENXIO)
            arch.realm, arch.rd_pa, arch.state = realm, rd, _RealmState.NEW

    def first_run(self, vcpu):
        """kvm_arch_vcpu_run_pid_change: the vGIC's resources, then kvm_activate_realm."""
        super().first_run(vcpu)
        self.activate(vcpu.vm)

    def activate(self, vm):
        """kvm_activate_realm (v14 18/44, 19/44, 27/44)."""
        arch = vm.arch
        with arch.lock:
            if arch.state >= _RealmState.ACTIVE:
                return  # a DEAD realm is not revived
            if arch.vgic is None:
                if not self.series.irqchip_check_before_create:
                    arch.state = _RealmState.DEAD  # v12 checks after marking it DEAD
                raise oserror(errno.EOPNOTSUPP)
            self.ensure_created(vm)
            arch.state = _RealmState.DEAD  # "in case we fail"
            realm = arch.realm
            for vcpu in sorted(vm.vcpus.values(), key=lambda v: v.id):
                self.create_rec(vcpu, realm)
            for slot in vm.memslots(0):
                if slot.gmem_file is None:
                    continue
                base, top = slot.base_gfn << PAGE_SHIFT, slot.end_gfn << PAGE_SHIFT
                top = min(top, realm.par_size)
                if base < top and kvm_rmi.init_ripas(realm, self.pool, base, top) != top:
                    raise oserror(errno.ENXIO)  # RMM 1.0 stops at populated pages [U]
            if kvm_rmi.rmi_failed(self.kernel, "realm_activate") \
                    or realm.activate().status != _RmiStatus.SUCCESS:
                raise oserror(errno.ENXIO)
            arch.state = _RealmState.ACTIVE

    def create_rec(self, vcpu, realm):
        """kvm_create_rec: REC already there -> EBUSY, no PSCI 0.2 -> EINVAL."""
        va = vcpu.arch
        if va.rec is not None:
            raise oserror(errno.EBUSY)
        if not va.features & 1 << A.KVM_ARM_VCPU_PSCI_0_2:
            raise oserror(errno.EINVAL)
        pa = self.pool.take()
        if kvm_rmi.rmi_failed(self.kernel, "rec_create"):
            self.pool.give(pa)
            raise oserror(errno.ENXIO)
        ok, rec = rtt.Rec.create(realm, pa)
        if ok.status != _RmiStatus.SUCCESS:
            self.pool.give(pa)
            raise oserror(errno.ENXIO)
        va.rec, va.rec_pa = rec, pa

    def run_enter(self, vcpu):
        """kvm_rec_pre_enter: a realm that is not ACTIVE -> EINVAL; complete a pending
        RIPAS change (kvm_complete_ripas_change, 23/44) before entering the REC."""
        return _rec_pre_enter(self, vcpu)

    def complete_ripas_change(self, vcpu, rec):
        _complete_ripas_change(self, vcpu, rec)

    def vm_destroy(self, vm):
        """kvm_destroy_realm: DYING, every DATA granule and RTT destroyed and undelegated,
        the RECs and the RD too, then DEAD."""
        arch = vm.arch
        with arch.lock:
            if arch.realm is None:
                arch.state = _RealmState.DEAD
                return
            arch.state = _RealmState.DYING
            for pa, n in arch.realm.teardown():
                self.granules.undelegate_range(pa, n << rtt.GRANULE_SHIFT)
            for vcpu in vm.vcpus.values():
                va = vcpu.arch
                if va is not None and va.rec_pa is not None:
                    self.granules.set_state(self.granules.index(va.rec_pa), 1,
                                            rtt._GranuleState.DELEGATED)
                    self.pool.give(va.rec_pa)
                    va.rec, va.rec_pa = None, None
            self.granules.set_state(self.granules.index(arch.rd_pa), 1, rtt._GranuleState.DELEGATED)
            self.pool.give(arch.rd_pa)
            arch.realm = None
            arch.state = _RealmState.DEAD

    def memslot_prepare(self, vm, old, new, change):
        super().memslot_prepare(vm, old, new, change)
        if change in ("delete", "move") and old is not None:
            # kvm_arch_flush_shadow_memslot: the slot's protected data goes
            self.destroy_protected(vm, old.base_gfn, old.end_gfn,
                                   "KVM_SET_USER_MEMORY_REGION2 deleting the memslot")

    # --- addresses and accesses ---------------------------------------------------------------

    def gpa_alias(self, vm, gpa):
        """The top IPA bit selects the unprotected alias; both name the same gfn
        (kvm_gpa_from_fault, v14 29/44)."""
        bit = vm.arch.unprotected_bit
        if gpa & bit:
            return gpa & ~bit, False
        return gpa, True

    def guest_access_early(self, vcpu, start, end, private, write):
        if not private:
            return None
        return _realm_access(vcpu, start, end)

    # --- memory callbacks -------------------------------------------------------------------

    def stage2_map(self, vm, gfn, pfn, npages, private):
        arch = vm.arch
        realm = arch.realm
        if realm is None:
            return
        ipa, size = gfn << PAGE_SHIFT, npages << PAGE_SHIFT
        try:
            _rtt_map(realm, arch, self.pool, ipa, pfn, size, private)
        except OSError:
            # the fault fails (KVM_RUN returns the error) and KVM's stage-2 keeps nothing
            # of it: realm_map_protected / realm_map_non_secure fail before the mapping
            vm.zap_gfn_range(gfn, gfn + npages, "private" if private else "shared")
            raise

    def stage2_zap(self, vm, runs):
        arch = vm.arch
        realm = arch.realm
        if realm is None:
            return
        with arch.lock:
            for gfn, _pfn, n, private, _w in runs:
                ipa = gfn << PAGE_SHIFT
                if not private and ipa < realm.par_size:
                    realm.unmap_unprotected_range(ipa | realm.unprotected_bit, n << PAGE_SHIFT)

    def gmem_invalidate(self, vm, event):
        """Pages going away (punch, release, memory failure) or becoming shared: their
        protected data is destroyed (realm_unmap_private_range)."""
        _gmem_invalidate(vm, event)

    def destroy_protected(self, vm, start_gfn, end_gfn, what):
        """RTT_DATA_UNMAP of gfns [start, end); RAM the realm did not release becomes
        DESTROYED and is recorded (kind "realm_data_destroyed"). ``what`` names the host
        call: a string, or (invalidation reason, guest_memfd page)."""
        _destroy_protected(vm, start_gfn, end_gfn, what)

    # --- host and devices ------------------------------------------------------------------------

    def _frames(self, inode, start, end):
        return inode.pfn(start) << PAGE_SHIFT, (end - start) << PAGE_SHIFT

    def host_access(self, vm, inode, start, end, write):
        pa, size = self._frames(inode, start, end)
        f = self.granules.host_access(pa, size, write)
        return None if f is None else f.explanation

    def explain_host_fault(self, vm, inode, index):
        pa, size = self._frames(inode, index, index + 1)
        f = self.granules.host_access(pa, size)
        if f is None:
            return None
        return f"guest_memfd page {index}: {f.explanation}"

    def dma_access(self, vm, inode, start, end, write):
        pa, size = self._frames(inode, start, end)
        f = self.granules.dma_access(pa, size, write)
        return None if f is None else f.explanation

    # --- inspection ----------------------------------------------------------------------------------

    def snapshot(self):
        out = {"revision": self.series.revision,
               "granules": {s.name: self.granules.count(s) for s in rtt.GranuleState
                            if s != rtt._GranuleState.UNDELEGATED},
               "realms": []}
        for vm in list(self.vms):
            arch = vm.arch
            r = {"state": arch.state.name, "ipa_bits": arch.ipa_bits}
            if arch.realm is not None:
                r["assigned_pages"] = arch.realm.assigned_pages()
                r["destroyed"] = [(s, e, w) for s, e, w in arch.destroyed]
            out["realms"].append(r)
        return out


def rtt_table_runs(realm):
    """[ipa_start, ipa_end, "HIPAS/RIPAS"] runs of a realm's RTT leaves for
    kmock.snapshot's tables: protected entries by HIPAS/RIPAS (UNASSIGNED/EMPTY, the
    initial state, is a gap), unprotected ones "ASSIGNED_NS" where mapped."""
    out = []
    for s, e, h, ripas, _pa in realm.runs(0, realm.ipa_size):
        if ripas is None:
            state = "ASSIGNED_NS" if h == rtt._Hipas.ASSIGNED else 0
        elif h == rtt._Hipas.UNASSIGNED and ripas == _Ripas.EMPTY:
            state = 0
        else:
            state = f"{h.name}/{ripas.name}"
        if state:
            if out and out[-1][1] == s and out[-1][2] == state:
                out[-1][1] = e
            else:
                out.append([s, e, state])
    return out


def granule_table_runs(granules):
    """[pfn_start, pfn_end, state] runs of the Realm-PAS granules (UNDELEGATED is a gap)."""
    return [[s >> PAGE_SHIFT, e >> PAGE_SHIFT, st.name] for s, e, st in granules.runs()
            if st != rtt._GranuleState.UNDELEGATED]


def _first_shared(vm, start, end):
    """The first gfn of [start, end) the VMM left shared, or None."""
    if end - start == 1:
        # one page (a 4K conversion): one get() instead of a ranges() generator
        return None if vm.mem_attrs.get(start) & K.KVM_MEMORY_ATTRIBUTE_PRIVATE else start
    for s, e, v in vm.mem_attrs.ranges(start, end):
        if not v & K.KVM_MEMORY_ATTRIBUTE_PRIVATE:
            return s
    return None


def _released(vm, start, end):
    """Whether a REC's pending RSI_IPA_STATE_SET(EMPTY) covers IPAs [start, end): the realm
    gave the pages up and the VMM is converting them."""
    for vcpu in vm.vcpus.values():
        rec = getattr(vcpu.arch, "rec", None)
        # (rec.ripas_pending, inlined)
        if rec is not None and rec.ripas_base != rec.ripas_top \
                and rec.ripas_value == _EMPTY \
                and rec.ripas_addr <= start and end <= rec.ripas_top:
            return True
    return False


def _cause_at(destroyed, ipa):
    for s, e, what in reversed(destroyed):
        if s <= ipa < e:
            return f"destroyed by {what}"
    return "destroyed by the host"


# --- the bodies of the callbacks every conversion runs -------------------------------------
# Module functions rather than RealmVm methods so that, compiled, their vCPU, VM, realm and
# REC are typed (realm.pxd): RealmVm is a plain class, as kmock_arm64's VM type it extends.

def _rec_pre_enter(vmtype, vcpu):
    """RealmVm.run_enter."""
    vm = vcpu.vm
    if vm.arch.state != _ACTIVE:
        raise oserror(errno.EINVAL)
    rec = vcpu.arch.rec
    # (rec.ripas_pending, inlined: every KVM_RUN of a realm asks)
    if rec is not None and rec.ripas_base != rec.ripas_top:
        _complete_ripas_change(vmtype, vcpu, rec)


def _complete_ripas_change(vmtype, vcpu, rec):
    """kvm_complete_ripas_change: RTT_SET_RIPAS over the REC's request (up to the first
    page the VMM left shared, with the ``attributes`` refusal), the data of what became
    EMPTY unmapped, then the RSI call's completion."""
    vm = vcpu.vm
    arch = vm.arch
    realm = arch.realm
    base, top, ripas = rec.ripas_addr, rec.ripas_top, rec.ripas_value
    limit, flags = top, 0
    if ripas == _RAM and vmtype.series.ripas_refusal == "attributes":
        first_shared = _first_shared(vm, base >> PAGE_SHIFT, top >> PAGE_SHIFT)
        if first_shared is not None:
            limit = first_shared << PAGE_SHIFT
            flags = rtt.REC_ENTER_FLAG_RIPAS_RESPONSE
    # ``with vm.mmu_lock, arch.lock``, each lock taken through its own acquire/release
    # (the RLock's C methods when compiled, realm.pxd): __enter__/__exit__ are Python calls
    mmu_lock = vm.mmu_lock
    mmu_lock.acquire()
    try:
        lock = arch.lock
        lock.acquire()
        try:
            reached = kvm_rmi.set_ripas(realm, rec, vmtype.pool, base, limit) if limit > base else base
            if ripas == _EMPTY and reached > base:
                # realm_unmap_private_range: the RTT's data and KVM's own stage-2 view
                kvm_rmi.unmap_protected(realm, base, reached)
                vm.zap_gfn_range(base >> PAGE_SHIFT, reached >> PAGE_SHIFT, "private")
            vcpu.arch.rsi_result = rec.enter(flags)
        finally:
            lock.release()
    finally:
        mmu_lock.release()


def _realm_access(vcpu, start, end):
    """RealmVm.guest_access_early of a private access: the RTT's verdict (RIPAS EMPTY:
    an SEA in the realm; DESTROYED: no progress, KVM_RUN ends with EINTR)."""
    vm = vcpu.vm
    arch = vm.arch
    realm = arch.realm
    if realm is None or end > realm.par_size:
        return None
    lock = arch.lock  # (acquire/release: C calls when compiled, see _complete_ripas_change)
    lock.acquire()
    try:
        page_end = (end + GRANULE_SIZE - 1) & ~(GRANULE_SIZE - 1)
        for s, e, ripas in realm.ripas_runs(start & ~(GRANULE_SIZE - 1), page_end):
            if ripas == _EMPTY:
                why = (f"realm access to IPA {max(s, start):#x}: RIPAS EMPTY; the RMM "
                       "injects a synchronous external abort into the realm (the host "
                       "sees nothing)")
                vm.kernel.violations.record("realm_sea", why, vm=vm, vcpu=vcpu.id,
                                            gpa=max(s, start), ripas="EMPTY")
                return why
            if ripas == _DESTROYED:
                ipa = max(s, start)
                cause = _cause_at(arch.destroyed, ipa)
                why = (f"realm access to IPA {ipa:#x}: RIPAS DESTROYED ({cause}); every "
                       "access aborts to the host and KVM cannot make it progress "
                       "unless the realm re-requests RAM with RSI_CHANGE_DESTROYED. "
                       "KVM_RUN returns -EINTR with KVM_EXIT_INTR (kmock: the signal "
                       "that would end KVM's abort loop)")
                vm.kernel.violations.record("realm_access_destroyed", why, vm=vm,
                                            vcpu=vcpu.id, gpa=ipa, ripas="DESTROYED",
                                            cause=cause)
                vcpu.run.exit_reason = K.KVM_EXIT_INTR
                raise oserror(errno.EINTR)
    finally:
        lock.release()
    return None


def _rtt_map(realm, arch, pool, ipa, pfn, size, private):
    """RealmVm.stage2_map's RMM side: RTT_DATA_MAP (protected) or RTT_UNPROT_MAP at the
    alias (unprotected) of the IPAs in the realm's range."""
    lock = arch.lock  # (acquire/release: C calls when compiled, see _complete_ripas_change)
    lock.acquire()
    try:
        if private:
            if ipa + size <= realm.par_size:
                kvm_rmi.map_protected(realm, pool, ipa, pfn << PAGE_SHIFT, size)
        elif ipa + size <= realm.par_size:
            kvm_rmi.map_unprotected(realm, pool, ipa | realm.unprotected_bit,
                                    pfn << PAGE_SHIFT, size)
    finally:
        lock.release()


def _gmem_invalidate(vm, event):
    """RealmVm.gmem_invalidate."""
    if event.to_private or vm.arch.realm is None:
        return
    start, end = event.start, event.end
    inode = event.inode
    if end - start == 1:
        # one page (a 4K conversion): bound to one memslot at most, slot_at's one look-up
        slot = inode.slot_at(start)
        slots = () if slot is None else (slot,)
    else:
        slots = inode.bound_slots(start, end)
    for slot in slots:
        if slot.vm is not vm:
            continue
        pgoff = slot.gmem_pgoff
        lo = max(start, pgoff)
        hi = min(end, pgoff + slot.npages)
        if lo < hi:
            delta = slot.base_gfn - pgoff
            _destroy_protected(vm, lo + delta, hi + delta, (event.reason, lo))


def _destroy_protected(vm, start_gfn, end_gfn, what):
    """RealmVm.destroy_protected."""
    arch = vm.arch
    realm = arch.realm
    if realm is None:
        return
    ipa, end = start_gfn << PAGE_SHIFT, min(end_gfn << PAGE_SHIFT, realm.par_size)
    if ipa >= end:
        return
    lock = arch.lock  # (acquire/release: C calls when compiled, see _complete_ripas_change)
    lock.acquire()
    try:
        gone = kvm_rmi.unmap_protected(realm, ipa, end)
        for s, e, ripas in gone:
            if ripas != _RAM or _released(vm, s, e):
                continue
            call = what
            if isinstance(what, tuple):
                reason, page = what
                page += (s >> PAGE_SHIFT) - start_gfn
                call = (f"{HOST_CALLS.get(reason, reason)}, guest_memfd offset "
                        f"{page << PAGE_SHIFT:#x}")
            arch.destroyed.append((s, e, call))
            vm.kernel.violations.record(
                "realm_data_destroyed",
                f"{call} removed realm RAM at IPA {s:#x}-{e:#x} that the realm did not "
                "release: RTT_DATA_UNMAP made its RIPAS DESTROYED; later realm accesses "
                "abort without progress unless the realm asks for RAM with "
                "RSI_CHANGE_DESTROYED",
                vm=vm, gpa=s, size=e - s, host_call=call)
    finally:
        lock.release()
