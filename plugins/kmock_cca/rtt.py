"""The RMM's tables: granule states by physical address, RTT entries by IPA, and the
RMI/RSI commands that change them.

What is modelled is what KVM and a realm can observe: the return code of every RMI
command KVM issues (``status | index << 8``), the state each command leaves behind, the
RSI_IPA_STATE_SET/GET protocol with its partial progress, and where an access ends up
(normal, REC exit to the host, SEA in the realm, granule protection fault).

Sources: TF-RMM runtime/rmi/rtt.c (RMM 1.0, stored id 1412247655: smc_rtt_create,
smc_rtt_fold, smc_rtt_destroy, map_unmap_ns, data_create, smc_data_destroy, update_ripas,
smc_rtt_init_ripas, smc_rtt_set_ripas), runtime/rmi/granule.c (smc_granule_delegate,
smc_granule_undelegate), runtime/rmi/realm.c (smc_realm_activate), runtime/rsi/memory.c
and runtime/rmi/rec.c complete_set_ripas (RSI side), lib/smc/include/smc-rsi.h; the
status codes of RMM v2.0-bet1 from the CCA v14 series' rmi_smc.h (patch 04/44).
docs/arch/cca.md has the tables and what is [U].

Choices (see docs/arch/cca.md "The RMM model"):
- The command set is RMM 1.0's (what the v12 series calls). The v13/v14 series call the
  RMM v2.0 range commands (RTT_DATA_MAP_INIT, RTT_DATA_MAP, RTT_DATA_UNMAP,
  RTT_UNPROT_MAP/UNMAP, GRANULE_RANGE_(UN)DELEGATE), whose effect on these tables is the
  same; the ``*_range`` methods are the batch form a plugin uses for them.
- Level-1 entries (1 GB) are the root and always present; level-2 and level-3 RTTs are
  created by RTT_CREATE and removed by RTT_FOLD/RTT_DESTROY. Blocks only come from a fold.
- Every table is a kmock.mm RangeMap: per-page state is only touched through ranges.
"""

import enum
from typing import NamedTuple, Optional

from kmock.mm import RangeMap

GRANULE_SHIFT = 12
GRANULE_SIZE = 1 << GRANULE_SHIFT
_L2_PAGES_SHIFT = 9  # a level-3 RTT maps 512 pages (2 MB)
_L1_PAGES_SHIFT = 18  # a level-2 RTT maps 512 * 512 pages (1 GB)
MIN_IPA_BITS = 32  # one whole 1 GB level-1 entry in the protected half at least
MAX_IPA_BITS = 52

# --- RMI ------------------------------------------------------------------------------------


class RmiStatus(enum.IntEnum):
    """RmiStatusCode (smc-rmi.h). 0-4 are RMM 1.0; 5-16 were added by RMM v2.0."""

    SUCCESS = 0
    ERROR_INPUT = 1
    ERROR_REALM = 2
    ERROR_REC = 3
    ERROR_RTT = 4
    ERROR_NOT_SUPPORTED = 5
    ERROR_DEVICE = 6
    ERROR_RTT_AUX = 7
    ERROR_PSMMU_ST = 8
    ERROR_DPT = 9
    BUSY = 10
    ERROR_GLOBAL = 11
    ERROR_TRACKING = 12
    INCOMPLETE = 13
    BLOCKED = 14
    ERROR_GPT = 15
    ERROR_GRANULE = 16


def rmi_return(status, index=0):
    """The value in X0: ``status | index << 8`` (TF-RMM pack_return_code)."""
    return int(status) | (int(index) << 8)


def rmi_status(ret):
    return ret & 0xFF  # RMI_RETURN_STATUS


def rmi_index(ret):
    return (ret >> 8) & 0xFF  # RMI_RETURN_INDEX


class RmiResult(NamedTuple):
    """X0 and the output registers of one RMI command."""

    ret: int
    x1: int = 0
    x2: int = 0

    @property
    def status(self):
        return _STATUS[self.ret & 0xFF]

    @property
    def index(self):
        return rmi_index(self.ret)

    def __repr__(self):
        tail = f", index={self.index}" if self.index else ""
        return f"RmiResult({self.status.name}{tail}, x1={self.x1:#x}, x2={self.x2:#x})"


_STATUS = tuple({m.value: m for m in RmiStatus}.get(i, i) for i in range(256))


#: tuple.__new__, what a namedtuple's own __new__ calls: the results of the commands a
#: conversion issues are built with it, as that __new__ is an interpreted function even
#: when this module is compiled
_tuple_new = tuple.__new__


def _rmi_result(ret, x1=0, x2=0):
    """``RmiResult(ret, x1, x2)``, built without the namedtuple's __new__ (_tuple_new)."""
    return _tuple_new(RmiResult, (ret, x1, x2))

_OK = RmiResult(rmi_return(RmiStatus.SUCCESS))
_SUCCESS = _OK.ret  # (X0 of a command that succeeded)
_INPUT = RmiResult(rmi_return(RmiStatus.ERROR_INPUT))
_REALM = RmiResult(rmi_return(RmiStatus.ERROR_REALM))
_REC = RmiResult(rmi_return(RmiStatus.ERROR_REC))


def _rtt(level, x1=0, x2=0):
    return RmiResult(rmi_return(RmiStatus.ERROR_RTT, level), x1, x2)


# SMC function ids, 0xC4000000 | offset: RMM 1.0 (TF-RMM smc-rmi.h) and RMM v2.0-bet1
# (CCA v14 04/44 rmi_smc.h). Same offset, different command where v2.0 reused a slot.
RMI_FID_V1 = {
    "VERSION": 0xC4000150,
    "GRANULE_DELEGATE": 0xC4000151,
    "GRANULE_UNDELEGATE": 0xC4000152,
    "DATA_CREATE": 0xC4000153,
    "DATA_CREATE_UNKNOWN": 0xC4000154,
    "DATA_DESTROY": 0xC4000155,
    "REALM_ACTIVATE": 0xC4000157,
    "REALM_CREATE": 0xC4000158,
    "REALM_DESTROY": 0xC4000159,
    "REC_CREATE": 0xC400015A,
    "REC_DESTROY": 0xC400015B,
    "REC_ENTER": 0xC400015C,
    "RTT_CREATE": 0xC400015D,
    "RTT_DESTROY": 0xC400015E,
    "RTT_MAP_UNPROTECTED": 0xC400015F,
    "RTT_READ_ENTRY": 0xC4000161,
    "RTT_UNMAP_UNPROTECTED": 0xC4000162,
    "PSCI_COMPLETE": 0xC4000164,
    "FEATURES": 0xC4000165,
    "RTT_FOLD": 0xC4000166,
    "REC_AUX_COUNT": 0xC4000167,
    "RTT_INIT_RIPAS": 0xC4000168,
    "RTT_SET_RIPAS": 0xC4000169,
}
RMI_FID_V2 = {
    "VERSION": 0xC4000150,
    "RTT_DATA_MAP_INIT": 0xC4000153,
    "REALM_ACTIVATE": 0xC4000157,
    "REALM_CREATE": 0xC4000158,
    "REALM_DESTROY": 0xC4000159,
    "REC_CREATE": 0xC400015A,
    "REC_DESTROY": 0xC400015B,
    "REC_ENTER": 0xC400015C,
    "RTT_CREATE": 0xC400015D,
    "RTT_DESTROY": 0xC400015E,
    "RTT_READ_ENTRY": 0xC4000161,
    "PSCI_COMPLETE": 0xC4000164,
    "FEATURES": 0xC4000165,
    "RTT_FOLD": 0xC4000166,
    "RTT_INIT_RIPAS": 0xC4000168,
    "RTT_SET_RIPAS": 0xC4000169,
    "GRANULE_RANGE_DELEGATE": 0xC40001F1,
    "GRANULE_RANGE_UNDELEGATE": 0xC40001F2,
    "RTT_DATA_MAP": 0xC40001F5,
    "RTT_DATA_UNMAP": 0xC40001F6,
    "RTT_UNPROT_MAP": 0xC40001FB,
    "RTT_UNPROT_UNMAP": 0xC40001FC,
    "REALM_TERMINATE": 0xC4000201,
}


class RecExitReason(enum.IntEnum):
    SYNC = 0
    IRQ = 1
    FIQ = 2
    PSCI = 3
    RIPAS_CHANGE = 4
    HOST_CALL = 5
    SERROR = 6
    S2AP_CHANGE = 7  # RMM v2.0


REC_ENTER_FLAG_EMULATED_MMIO = 1 << 0
REC_ENTER_FLAG_INJECT_SEA = 1 << 1
REC_ENTER_FLAG_TRAP_WFI = 1 << 2
REC_ENTER_FLAG_TRAP_WFE = 1 << 3
REC_ENTER_FLAG_RIPAS_RESPONSE = 1 << 4  # set: the host rejects the pending RIPAS change

# --- RSI (smc-rsi.h) -----------------------------------------------------------------------


class RsiStatus(enum.IntEnum):
    SUCCESS = 0
    ERROR_INPUT = 1
    ERROR_STATE = 2
    INCOMPLETE = 3
    ERROR_UNKNOWN = 4


RSI_ACCEPT = 0
RSI_REJECT = 1
RSI_NO_CHANGE_DESTROYED = 0
RSI_CHANGE_DESTROYED = 1
SMC_RSI_IPA_STATE_SET = 0xC4000197
SMC_RSI_IPA_STATE_GET = 0xC4000198


class RsiResult(NamedTuple):
    """X0-X2 as the realm sees them when the RSI call returns."""

    status: int
    x1: int = 0
    x2: int = 0


class RipasChangeExit(NamedTuple):
    """REC exit RMI_EXIT_RIPAS_CHANGE (rec_exit.ripas_base/top/value)."""

    base: int
    top: int
    ripas: "Ripas"


# --- states ---------------------------------------------------------------------------------


class GranuleState(enum.IntEnum):
    """TF-RMM enum granule_state. UNDELEGATED is GRANULE_STATE_NS: the only non-Realm PAS state."""

    UNDELEGATED = 0
    DELEGATED = 1
    RD = 2
    REC = 3
    REC_AUX = 4
    DATA = 5
    RTT = 6


class Hipas(enum.IntEnum):
    """RmiRttEntryState (RMI_UNASSIGNED 0, RMI_ASSIGNED 1, RMI_TABLE 2). For an unprotected
    IPA the same values read UNASSIGNED_NS / ASSIGNED_NS."""

    UNASSIGNED = 0
    ASSIGNED = 1
    TABLE = 2


class Ripas(enum.IntEnum):
    EMPTY = 0
    RAM = 1
    DESTROYED = 2
    DEV = 3  # RMM v2.0; not produced by this model


class RealmState(enum.IntEnum):
    """KVM's enum realm_state (v14 kvm_rmi.h): the lifecycle a VMM observes."""

    NONE = 0
    NEW = 1
    ACTIVE = 2
    DYING = 3
    DEAD = 4


class RmmRealmState(enum.Enum):
    """The RMM's realm state (REALM_NEW, REALM_ACTIVE, REALM_SYSTEM_OFF); values not modelled."""

    NEW = "REALM_NEW"
    ACTIVE = "REALM_ACTIVE"
    SYSTEM_OFF = "REALM_SYSTEM_OFF"


class Access(enum.Enum):
    """Where one access ends up."""

    OK = "ok"  # mapped; the access completes
    REC_EXIT = "rec_exit"  # stage-2 abort to the host, which may map the page and re-run
    DESTROYED = "destroyed"  # REC exit on every attempt: RIPAS DESTROYED, no forward progress
    SEA = "sea"  # synchronous external abort injected into the realm; the host sees nothing
    GPF = "gpf"  # granule protection fault at the host PE (SIGBUS for user space)
    SMMU_GPF = "smmu_gpf"  # granule protection check failed in the SMMU: DMA blocked


def _plain(enum_cls):
    """A plain class holding ``enum_cls``'s members (the same objects). The hot paths read
    members through it: a member read through an enum class goes through EnumType's
    __getattr__ slot, ~250 ns on Python 3.11, against ~50 ns for a plain class attribute."""
    return type(f"_{enum_cls.__name__}", (), dict(enum_cls.__members__))


_GranuleState, _Hipas, _Ripas = _plain(GranuleState), _plain(Hipas), _plain(Ripas)
_RealmState, _RmmRealmState = _plain(RealmState), _plain(RmmRealmState)
_RmiStatus, _RsiStatus, _RecExitReason = _plain(RmiStatus), _plain(RsiStatus), _plain(RecExitReason)


# --- RTT entry encoding in a RangeMap value -------------------------------------------------
# bits 0-1 HIPAS, bits 2-3 RIPAS, bits 8-63 (frame - page) mod 2**56 for ASSIGNED entries, so
# that a PA-contiguous mapping is one coalesced run. 0 = UNASSIGNED EMPTY / UNASSIGNED_NS.

_RIPAS_SHIFT = 2
_DELTA_SHIFT = 8
_DELTA_MOD = 1 << 56


def _pack(hipas, ripas=_Ripas.EMPTY, frame=None, page=0):
    """``frame`` is the absolute physical frame number (PA >> 12) mapped at ``page``."""
    v = int(hipas) | (int(ripas) << _RIPAS_SHIFT)
    if frame is not None:
        v |= ((frame - page) % _DELTA_MOD) << _DELTA_SHIFT
    return v


_HIPAS = (_Hipas.UNASSIGNED, _Hipas.ASSIGNED, _Hipas.TABLE, None)
_RIPAS = (_Ripas.EMPTY, _Ripas.RAM, _Ripas.DESTROYED, _Ripas.DEV)
_RIPAS_OF = {r.value: r for r in Ripas}  # Ripas(value) without the enum call
#: the members an RSI_IPA_STATE_SET and its completion compare with, as module globals (a
#: member read through _Ripas / _RsiStatus is a class attribute look-up every time)
_EMPTY, _RAM, _DESTROYED = _Ripas.EMPTY, _Ripas.RAM, _Ripas.DESTROYED
_RSI_SUCCESS, _RSI_INPUT = _RsiStatus.SUCCESS, _RsiStatus.ERROR_INPUT


def _hipas(v):
    return _HIPAS[v & 3]  # a table lookup: constructing the enum costs more than the rest


def _ripas(v):
    return _RIPAS[(v >> _RIPAS_SHIFT) & 3]


def _frame(v, page):
    return (page + (v >> _DELTA_SHIFT)) % _DELTA_MOD


def _with_ripas(v, ripas):
    return (v & ~(3 << _RIPAS_SHIFT)) | (int(ripas) << _RIPAS_SHIFT)


_U_EMPTY = _pack(_Hipas.UNASSIGNED, _Ripas.EMPTY)
_U_RAM = _pack(_Hipas.UNASSIGNED, _Ripas.RAM)
_U_DESTROYED = _pack(_Hipas.UNASSIGNED, _Ripas.DESTROYED)
_UNASSIGNED_NS = 0


def _map_pages(level):
    """Pages mapped by one entry at ``level`` (1: 1 GB, 2: 2 MB, 3: 4 KB)."""
    return 1 << (9 * (3 - level))


class Fault(NamedTuple):
    kind: Access
    pa: int
    state: GranuleState
    explanation: str


# --- granules -------------------------------------------------------------------------------


class GranuleTable:
    """The state of every 4 KB physical granule in [base, base + nr_granules * 4 KB).

    Every state but UNDELEGATED is in the Realm PAS: a host CPU access there is a granule
    protection fault, a non-secure DMA is blocked by the SMMU's granule protection check.
    """

    def __init__(self, nr_granules, base=0):
        if base % GRANULE_SIZE:
            raise ValueError("base must be granule aligned")
        self.base = base
        self.nr_granules = nr_granules
        self._map = RangeMap(nr_granules, _GranuleState.UNDELEGATED)

    def index(self, pa):
        """Index of the granule at ``pa``, or None if ``pa`` is unaligned or not tracked."""
        if pa is None or pa % GRANULE_SIZE or pa < self.base:
            return None
        i = (pa - self.base) >> GRANULE_SHIFT
        return i if i < self.nr_granules else None

    def pa(self, index):
        return self.base + (index << GRANULE_SHIFT)

    def state(self, pa):
        i = self.index(pa)
        if i is None:
            raise ValueError(f"PA {pa:#x} is not a tracked granule")
        return GranuleState(self._map.get(i))

    def in_state(self, index, n, state):
        """How many granules from ``index`` on are in ``state`` (at most n)."""
        if index is None or not 0 <= index < self.nr_granules:
            return 0
        n = min(n, self.nr_granules - index)
        j = self._map.find_not(index, index + n, state)
        return n if j < 0 else j - index

    def set_state(self, index, n, state):
        self._map.set(index, index + n, state)

    def runs(self, pa=None, size=None):
        """(pa_start, pa_end, GranuleState) runs over [pa, pa + size)."""
        lo = 0 if pa is None else (pa - self.base) >> GRANULE_SHIFT
        hi = self.nr_granules if size is None else lo + (size >> GRANULE_SHIFT)
        for s, e, v in self._map.ranges(lo, hi):
            yield self.pa(s), self.pa(e), GranuleState(v)

    def count(self, state):
        return self._map.count(state)

    # RMI_GRANULE_DELEGATE / UNDELEGATE (granule.c: find_lock_granule(addr, expected state))
    def delegate(self, pa):
        return self._transition(pa, _GranuleState.UNDELEGATED, _GranuleState.DELEGATED)

    def undelegate(self, pa):
        return self._transition(pa, _GranuleState.DELEGATED, _GranuleState.UNDELEGATED)

    def _transition(self, pa, old, new):
        i = self.index(pa)
        if i is None or self._map.get(i) != old:
            return _INPUT
        self._map.set(i, i + 1, new)
        return _OK

    def delegate_range(self, pa, size):
        """Batch delegate: granule by granule from ``pa``, stopping at the first failure.

        Returns (RmiResult of the first failure or SUCCESS, bytes done). The RMM v2.0
        GRANULE_RANGE_DELEGATE has its own progress rules, not read [U]."""
        return self._transition_range(pa, size, _GranuleState.UNDELEGATED, _GranuleState.DELEGATED)

    def undelegate_range(self, pa, size):
        return self._transition_range(pa, size, _GranuleState.DELEGATED, _GranuleState.UNDELEGATED)

    def _transition_range(self, pa, size, old, new):
        i = self.index(pa)
        if i is None or size <= 0 or size % GRANULE_SIZE:
            return _INPUT, 0
        n = size >> GRANULE_SHIFT
        k = self.in_state(i, n, old)
        self._map.set(i, i + k, new)
        return (_OK if k == n else _INPUT), k << GRANULE_SHIFT

    # host and device accesses
    def first_realm_pas(self, pa, size):
        """The first tracked granule in [pa, pa + size) that is in the Realm PAS, or None."""
        lo = max(pa - self.base, 0) >> GRANULE_SHIFT
        hi = min((pa + size - self.base + GRANULE_SIZE - 1) >> GRANULE_SHIFT, self.nr_granules)
        if lo >= hi:
            return None
        j = self._map.find_not(lo, hi, _GranuleState.UNDELEGATED)
        return None if j < 0 else self.pa(j)

    def host_access(self, pa, size, write=False):
        """None, or the granule protection fault a host CPU access to [pa, pa+size) takes."""
        return self._gpf(pa, size, Access.GPF, f"host {'write' if write else 'read'}",
                         "granule protection fault (a user-space access gets SIGBUS, arm64 "
                         "'Handle GPFs' patch)")

    def dma_access(self, pa, size, write=True):
        """None, or the SMMU granule protection fault a non-secure DMA to [pa, pa+size) takes."""
        return self._gpf(pa, size, Access.SMMU_GPF,
                         f"non-secure DMA {'write' if write else 'read'}",
                         "blocked by the SMMU granule protection check")

    def _gpf(self, pa, size, access, who, consequence):
        """The Fault of the first Realm-PAS granule an access of [pa, pa+size) reaches."""
        g = self.first_realm_pas(pa, size)
        if g is None:
            return None
        st = GranuleState(self._map.get(self.index(g)))
        return Fault(access, g, st,
                     f"{who} of PA {g:#x}: granule is {st.name} (Realm PAS); {consequence}")


# --- RTT entries ----------------------------------------------------------------------------


class RttEntry(NamedTuple):
    ipa: int
    level: int
    hipas: Hipas
    ripas: Optional[Ripas]  # None for an unprotected IPA
    pa: Optional[int]
    protected: bool

    def __str__(self):
        if not self.protected:
            state = "ASSIGNED_NS" if self.hipas == _Hipas.ASSIGNED else "UNASSIGNED_NS"
            where = "unprotected"
        else:
            state = f"{self.hipas.name} {self.ripas.name}"
            where = "protected"
        pa = f", PA {self.pa:#x}" if self.pa is not None else ""
        return f"IPA {self.ipa:#x} ({where}, level {self.level}): {state}{pa}"


class Realm:
    """One realm's RTTs (protected and unprotected halves) and its RMM-side state.

    IPA bit ``ipa_bits - 1`` selects the unprotected alias; the protected half is the
    Protected Address Range (PAR).
    """

    def __init__(self, granules, rd_pa, ipa_bits, init_ripas_skips_assigned_ram=False):
        """``init_ripas_skips_assigned_ram``: RTT_INIT_RIPAS passes over ASSIGNED RAM entries
        (populated pages) instead of stopping there as RMM 1.0 does (TF-RMM
        smc_rtt_init_ripas). KVM calls INIT_RIPAS over whole memslots after POPULATE, which
        only terminates if the RMM skips them; what RMM v2.0 does is [U], so it is a setting."""
        if not MIN_IPA_BITS <= ipa_bits <= MAX_IPA_BITS:
            raise ValueError(f"ipa_bits must be in [{MIN_IPA_BITS}, {MAX_IPA_BITS}]")
        self.init_ripas_skips_assigned_ram = init_ripas_skips_assigned_ram
        self.granules = granules
        self.rd_pa = rd_pa
        self.ipa_bits = ipa_bits
        self.ipa_size = 1 << ipa_bits
        self.par_size = 1 << (ipa_bits - 1)
        self.unprotected_bit = self.par_size
        npages = self.ipa_size >> GRANULE_SHIFT
        self._entries = RangeMap(npages, _U_EMPTY)  # the unprotected half reads UNASSIGNED_NS
        self._l3 = RangeMap(npages >> _L2_PAGES_SHIFT, 0)  # 0, or the RTT granule's index + 1
        self._l2 = RangeMap(npages >> _L1_PAGES_SHIFT, 0)
        self.rmm_state = _RmmRealmState.NEW
        self.rim = []  # (command, ipa_start, ipa_end, measured): one record per call

    @classmethod
    def create(cls, granules, rd_pa, ipa_bits, **settings):
        """RMI_REALM_CREATE, reduced to the RD granule: returns (RmiResult, Realm or None)."""
        i = granules.index(rd_pa)
        if i is None or granules.in_state(i, 1, _GranuleState.DELEGATED) != 1:
            return _INPUT, None
        granules.set_state(i, 1, _GranuleState.RD)
        return _OK, cls(granules, rd_pa, ipa_bits, **settings)

    # -- queries ---------------------------------------------------------------------------
    def is_protected(self, ipa):
        return ipa < self.par_size

    def level(self, ipa):
        """The level of the entry that maps ``ipa`` (1, 2 or 3)."""
        page = ipa >> GRANULE_SHIFT
        # a level-3 RTT has its level-2 parent (RTT_CREATE needs it, RTT_DESTROY and
        # RTT_FOLD refuse a table with children): one look-up where level-3 tables are
        if self._l3.get(page >> _L2_PAGES_SHIFT):
            return 3
        return 2 if self._l2.get(page >> _L1_PAGES_SHIFT) else 1

    def entry(self, ipa):
        """The RTT entry for ``ipa`` (any byte address inside the IPA space)."""
        if not 0 <= ipa < self.ipa_size:
            raise ValueError(f"IPA {ipa:#x} outside the {self.ipa_bits}-bit IPA space")
        page = ipa >> GRANULE_SHIFT
        v = self._entries.get(page)
        hipas = _hipas(v)
        prot = self.is_protected(ipa)
        pa = _frame(v, page) << GRANULE_SHIFT if hipas == _Hipas.ASSIGNED else None
        return RttEntry(ipa, self.level(ipa), hipas, _ripas(v) if prot else None, pa, prot)

    def runs(self, start, end):
        """Coalesced runs (ipa_start, ipa_end, hipas, ripas or None, pa_start or None)."""
        for s, e, v in self._entries.ranges(start >> GRANULE_SHIFT, end >> GRANULE_SHIFT):
            hipas = _hipas(v)
            prot = (s << GRANULE_SHIFT) < self.par_size
            pa = _frame(v, s) << GRANULE_SHIFT if hipas == _Hipas.ASSIGNED else None
            yield s << GRANULE_SHIFT, e << GRANULE_SHIFT, hipas, _ripas(v) if prot else None, pa

    def table_count(self, level):
        """Number of level-2 or level-3 RTTs present."""
        m = self._l2 if level == 2 else self._l3
        return len(m) - m.count(0)

    def assigned_pages(self):
        """Number of protected pages with HIPAS ASSIGNED (DATA granules of this realm)."""
        n = 0
        for s, e, v in self._entries.ranges(0, self.par_size >> GRANULE_SHIFT):
            if _hipas(v) == _Hipas.ASSIGNED:
                n += e - s
        return n

    # -- helpers -----------------------------------------------------------------------------
    def _entry_runs(self, lo, hi):
        """``self._entries.ranges(lo, hi)``; a single page as its one run, read with get()
        (a 4K conversion's case: a ranges() generator costs ~0.7 us, a get() ~0.1 us)."""
        if hi - lo == 1:
            return ((lo, hi, self._entries.get(lo)),)
        return self._entries.ranges(lo, hi)

    def _aligned(self, ipa, level):
        return ipa % (_map_pages(level) << GRANULE_SHIFT) == 0

    def _walk(self, ipa, level):
        """Level of the entry the walk to ``level`` stops at (TF-RMM wi.last_level)."""
        return min(self.level(ipa), level)

    def _tables_of(self, level):
        return self._l2 if level == 2 else self._l3

    def _table_shift(self, level):
        return _L1_PAGES_SHIFT if level == 2 else _L2_PAGES_SHIFT

    def _first_table(self, child_level, page_lo, page_hi):
        """First page in [page_lo, page_hi) covered by an RTT of ``child_level``, or page_hi."""
        if child_level > 3:
            return page_hi
        # (_tables_of / _table_shift, inlined: every RTT_SET_RIPAS walks here)
        m, sh = (self._l2, _L1_PAGES_SHIFT) if child_level == 2 else (self._l3, _L2_PAGES_SHIFT)
        lo, hi = page_lo >> sh, (page_hi + (1 << sh) - 1) >> sh
        j = m.find_not(lo, hi, 0)
        return page_hi if j < 0 else max(j << sh, page_lo)

    def _is_live(self, level, page_lo):
        """Whether the RTT of ``level`` at page_lo has a non-zero TF-RMM refcount: a child RTT
        or an ASSIGNED protected entry (NS mappings hold no reference, map_unmap_ns)."""
        n = _map_pages(level - 1)
        if self._first_table(level + 1, page_lo, page_lo + n) != page_lo + n:
            return True
        if page_lo << GRANULE_SHIFT >= self.par_size:
            return False
        return any(_hipas(v) == _Hipas.ASSIGNED for _s, _e, v in self._entries.ranges(page_lo, page_lo + n))

    def _validate_structure(self, ipa, level):
        return level in (2, 3) and ipa < self.ipa_size and self._aligned(ipa, level - 1)

    # -- RTT structure commands ----------------------------------------------------------
    def rtt_create(self, rtt_pa, ipa, level):
        """RMI_RTT_CREATE: a new RTT of ``level`` under the level-1 entry; children inherit it."""
        g = self.granules.index(rtt_pa)
        if g is None or self.granules.in_state(g, 1, _GranuleState.DELEGATED) != 1:
            return _INPUT
        if not self._validate_structure(ipa, level):
            return _INPUT
        last = self._walk(ipa, level - 1)
        if last != level - 1:
            return _rtt(last)
        page = ipa >> GRANULE_SHIFT
        m, sh = self._tables_of(level), self._table_shift(level)
        if m.get(page >> sh):
            return _rtt(level - 1)
        m.set(page >> sh, (page >> sh) + 1, g + 1)
        self.granules.set_state(g, 1, _GranuleState.RTT)
        return _OK

    def rtt_fold(self, ipa, level):
        """RMI_RTT_FOLD: replace a homogeneous RTT of ``level`` by one entry of level - 1."""
        if not self._validate_structure(ipa, level):
            return _INPUT
        last = self._walk(ipa, level - 1)
        if last != level - 1:
            return _rtt(last)
        page = ipa >> GRANULE_SHIFT
        m, sh = self._tables_of(level), self._table_shift(level)
        rtt = m.get(page >> sh)
        if not rtt:
            return _rtt(level - 1)
        n = _map_pages(level - 1)
        if self._first_table(level + 1, page, page + n) != page + n:
            return _rtt(level)  # a child table: mixed entries
        v0 = self._entries.get(page)
        if self._entries.find_not(page, page + n, v0) >= 0:
            return _rtt(level)
        if _hipas(v0) == _Hipas.ASSIGNED:
            if level <= 2:
                return _rtt(last)  # no block below level 2 (S2TT_MIN_BLOCK_LEVEL)
            if _frame(v0, page) % n:
                return _rtt(level)  # not a contiguous, aligned block
        m.set(page >> sh, (page >> sh) + 1, 0)
        self.granules.set_state(rtt - 1, 1, _GranuleState.DELEGATED)
        return RmiResult(_OK.ret, self.granules.pa(rtt - 1))

    def rtt_destroy(self, ipa, level):
        """RMI_RTT_DESTROY: a non-live RTT goes; its IPA range becomes DESTROYED (protected)
        or UNASSIGNED_NS. x1 = RTT PA, x2 = next IPA to try (end of the range) [U]."""
        if not self._validate_structure(ipa, level):
            return RmiResult(_INPUT.ret, 0, 0)
        page = ipa >> GRANULE_SHIFT
        n = _map_pages(level - 1)
        nxt = (page + n) << GRANULE_SHIFT
        last = self._walk(ipa, level - 1)
        m, sh = self._tables_of(level), self._table_shift(level)
        rtt = m.get(page >> sh) if last == level - 1 else 0
        if not rtt:
            return _rtt(last, 0, nxt)
        if self._is_live(level, page):
            return _rtt(level, 0, ipa)
        m.set(page >> sh, (page >> sh) + 1, 0)
        fill = _U_DESTROYED if self.is_protected(ipa) else _UNASSIGNED_NS
        self._entries.set(page, page + n, fill)
        self.granules.set_state(rtt - 1, 1, _GranuleState.DELEGATED)
        return RmiResult(_OK.ret, self.granules.pa(rtt - 1), nxt)

    # -- DATA commands (one granule; *_range is the batch form) ---------------------------
    def _data_check(self, data_idx, ipa, src_idx, flags, known):
        """The error RMI_DATA_CREATE[_UNKNOWN] returns for one granule, in TF-RMM's order
        (smc_data_create, data_create, validate_data_create[_unknown]); None if it succeeds."""
        g = self.granules
        if known:
            if flags not in (0, 1):
                return _INPUT
            if g.in_state(src_idx, 1, _GranuleState.UNDELEGATED) != 1:
                return _INPUT
        if g.in_state(data_idx, 1, _GranuleState.DELEGATED) != 1:
            return _INPUT
        if known and self.rmm_state != _RmmRealmState.NEW:
            return _REALM
        if ipa >= self.par_size or ipa % GRANULE_SIZE:  # (not self.is_protected(ipa))
            return _INPUT
        last = self.level(ipa)  # (self._walk(ipa, 3): the walk to level 3 stops there)
        if last != 3:
            return _rtt(last)
        if self._entries.get(ipa >> GRANULE_SHIFT) & 3 != _Hipas.UNASSIGNED:  # (the HIPAS bits)
            return _rtt(3)
        return None

    def _data_prefix(self, data_idx, page, n, src_idx, known):
        """How many granules from the first would pass _data_check (range operations only)."""
        g = self.granules
        k = min(n, g.in_state(data_idx, n, _GranuleState.DELEGATED))
        if known:
            k = min(k, g.in_state(src_idx, k, _GranuleState.UNDELEGATED))
            if self.rmm_state != _RmmRealmState.NEW:
                return 0
        k = min(k, max((self.par_size >> GRANULE_SHIFT) - page, 0))
        if k == 0:
            return 0
        k = min(k, self._pages_at_level3(page, k))
        for s, e, v in self._entries.ranges(page, page + k):
            if v & 3 != _Hipas.UNASSIGNED:  # (_hipas(v), as the HIPAS bits)
                return s - page
        return k

    def _pages_at_level3(self, page, n):
        """How many pages from ``page`` are mapped by level-3 RTTs (at most n)."""
        sh = _L2_PAGES_SHIFT
        lo, hi = page >> sh, (page + n + (1 << sh) - 1) >> sh
        j = self._l3.find(lo, hi, 0)
        return n if j < 0 else max(min((j << sh) - page, n), 0)

    def data_create(self, data_pa, ipa, src_pa, flags=0):
        """RMI_DATA_CREATE (REALM_NEW only): ASSIGNED RAM, contents from the NS ``src_pa``."""
        return self.data_create_range(data_pa, ipa, src_pa, GRANULE_SIZE, flags)[0]

    def data_create_unknown(self, data_pa, ipa):
        """RMI_DATA_CREATE_UNKNOWN (any realm state): ASSIGNED, RIPAS unchanged."""
        return self.data_create_range(data_pa, ipa, None, GRANULE_SIZE)[0]

    def data_create_range(self, data_pa, ipa, src_pa, size, flags=0):
        """``size / 4K`` DATA_CREATE (``src_pa`` given) or DATA_CREATE_UNKNOWN (None) calls on
        consecutive granules, stopping at the first failure: (RmiResult, bytes done)."""
        known = src_pa is not None
        g = self.granules
        if size <= 0 or size % GRANULE_SIZE:
            return _INPUT, 0
        data_idx = g.index(data_pa)
        src_idx = g.index(src_pa) if known else None
        first = self._data_check(data_idx, ipa, src_idx, flags, known)
        if first is not None:
            return first, 0
        page = ipa >> GRANULE_SHIFT
        n = size >> GRANULE_SHIFT
        frame = data_pa >> GRANULE_SHIFT
        # one granule: _data_check above passed, which is all _data_prefix checks for it
        k = 1 if n == 1 else self._data_prefix(data_idx, page, n, src_idx, known)
        if known:
            self._entries.set(page, page + k, _pack(_Hipas.ASSIGNED, _Ripas.RAM, frame, page))
            self.rim.append(("DATA_CREATE", ipa, ipa + (k << GRANULE_SHIFT), bool(flags)))
        else:
            # _pack(ASSIGNED, _ripas(v), frame, page) with v's RIPAS bits kept as they are
            assigned = _Hipas.ASSIGNED | (((frame - page) % _DELTA_MOD) << _DELTA_SHIFT)
            for s, e, v in tuple(self._entry_runs(page, page + k)):
                self._entries.set(s, e, assigned | (v & (3 << _RIPAS_SHIFT)))
        g.set_state(data_idx, k, _GranuleState.DATA)
        if k == n:
            return _OK, k << GRANULE_SHIFT
        nxt_src = None if src_idx is None else src_idx + k
        return self._data_check(data_idx + k, ipa + (k << GRANULE_SHIFT), nxt_src, flags, known), k << GRANULE_SHIFT

    def data_destroy(self, ipa):
        """RMI_DATA_DESTROY: RAM becomes DESTROYED, EMPTY stays EMPTY; the granule goes back
        to DELEGATED (wiped). x1 = the DATA granule's PA, x2 = next IPA [U on x2 at level 2]."""
        return self.data_destroy_range(ipa, GRANULE_SIZE)[0]

    def _destroy_check(self, page):
        ipa = page << GRANULE_SHIFT
        if not self.is_protected(ipa):
            return RmiResult(_INPUT.ret, 0, 0)
        last = self._walk(ipa, 3)
        if last != 3:
            return _rtt(last, 0, self._skip(page, last))
        if _hipas(self._entries.get(page)) != _Hipas.ASSIGNED:
            return _rtt(3, 0, self._skip(page, 3))
        return None

    def _skip(self, page, level):
        """x2 of a failed DATA_DESTROY: the next ASSIGNED page in this level-3 RTT or the end
        of the entry (s2tt_skip_non_live_entries, simplified)."""
        n = _map_pages(level) if level < 3 else _map_pages(2)
        end = (page // n + 1) * n
        if level == 3:
            for s, _e, v in self._entries.ranges(page + 1, end):
                if _hipas(v) == _Hipas.ASSIGNED:
                    return s << GRANULE_SHIFT
        return end << GRANULE_SHIFT

    def data_destroy_range(self, ipa, size):
        """``size / 4K`` DATA_DESTROY calls from ``ipa``, stopping at the first failure:
        (RmiResult of the last call, bytes done)."""
        if ipa % GRANULE_SIZE or ipa >= self.ipa_size or size <= 0 or size % GRANULE_SIZE:
            return RmiResult(_INPUT.ret, 0, 0), 0
        page = ipa >> GRANULE_SHIFT
        n = size >> GRANULE_SHIFT
        first = self._destroy_check(page)
        if first is not None:
            return first, 0
        k = min(n, (self.par_size >> GRANULE_SHIFT) - page)
        k = self._pages_at_level3(page, k)
        runs = []
        for s, e, v in self._entry_runs(page, page + k):
            if _hipas(v) != _Hipas.ASSIGNED:
                k = s - page
                break
            runs.append((s, e, v))
        for s, e, v in runs:
            new = _U_DESTROYED if _ripas(v) in (_Ripas.RAM, _Ripas.DESTROYED) else _U_EMPTY
            self._entries.set(s, e, new)
            self.granules.set_state(self.granules.index(_frame(v, s) << GRANULE_SHIFT), e - s, _GranuleState.DELEGATED)
        last_pa = _frame(runs[-1][2], page + k - 1) << GRANULE_SHIFT
        if k == n:
            return _rmi_result(_OK.ret, last_pa, (page + k) << GRANULE_SHIFT), k << GRANULE_SHIFT
        return self._destroy_check(page + k), k << GRANULE_SHIFT

    # -- RIPAS -------------------------------------------------------------------------------
    def rtt_init_ripas(self, base, top):
        """RMI_RTT_INIT_RIPAS (REALM_NEW): UNASSIGNED EMPTY becomes UNASSIGNED RAM from base on,
        within one RTT; stops at anything else. x1 = the IPA reached."""
        if top <= base:
            return _INPUT
        if base % GRANULE_SIZE or top % GRANULE_SIZE or top >= self.ipa_size:
            return _INPUT
        if not self.is_protected(base) or not self.is_protected(top - GRANULE_SIZE):
            return _INPUT
        if self.rmm_state != _RmmRealmState.NEW:
            return _REALM
        level, stop = self._entry_window(base, top)
        if stop is None:
            return _rtt(level)
        page = base >> GRANULE_SHIFT
        end = page
        empty_runs = []
        for s, e, v in self._entries.ranges(page, stop) if stop > page else ():
            if v == _U_EMPTY:
                empty_runs.append((s, e))
            elif v != _U_RAM and not (
                self.init_ripas_skips_assigned_ram and _hipas(v) == _Hipas.ASSIGNED and _ripas(v) == _Ripas.RAM
            ):
                break
            end = e
        if end == page:
            return _rtt(level)
        for s, e in empty_runs:
            self._entries.set(s, e, _U_RAM)
        self.rim.append(("RTT_INIT_RIPAS", base, end << GRANULE_SHIFT, True))
        return _rmi_result(_SUCCESS, end << GRANULE_SHIFT)

    def _entry_window(self, base, top):
        """(level, stop page) for a command walking entries of one RTT from ``base``: stop is
        the end of the whole entries below ``top`` in that RTT, cut at the first child RTT;
        stop is None if ``base`` is not aligned to the level it is mapped at."""
        page = base >> GRANULE_SHIFT
        # self.level(base) and _map_pages(level), inlined (every RTT_*_RIPAS call)
        if self._l3.get(page >> _L2_PAGES_SHIFT):
            level = 3
        else:
            level = 2 if self._l2.get(page >> _L1_PAGES_SHIFT) else 1
        n = 1 << (9 * (3 - level))
        if page % n:
            return level, None
        table_end = (page // (n * 512) + 1) * n * 512
        stop = min(table_end, page + ((top >> GRANULE_SHIFT) - page) // n * n)
        stop = min(stop, self._first_table(level + 1, page, max(stop, page)))
        return level, stop

    def rtt_set_ripas(self, rec, base, top):
        """RMI_RTT_SET_RIPAS: progress on the REC's pending RSI_IPA_STATE_SET request."""
        if top <= base or top % GRANULE_SIZE:
            return _INPUT
        if rec.running or rec.realm is not self:
            return _REC
        if base != rec.ripas_addr or top > rec.ripas_top:
            return _INPUT
        level, stop = self._entry_window(base, top)
        if stop is None:
            return _rtt(level)
        page = base >> GRANULE_SHIFT
        changes = []
        end = page
        for s, e, v in self._entry_runs(page, stop) if stop > page else ():
            new = _update_ripas(v, rec.ripas_value, rec.change_destroyed)
            if new is None:
                break
            changes.append((s, e, new))
            end = e
        if end == page:
            return _rtt(level)
        for s, e, new in changes:
            self._entries.set(s, e, new)
        rec.ripas_addr = end << GRANULE_SHIFT
        return _rmi_result(_SUCCESS, rec.ripas_addr)

    # -- unprotected IPA -----------------------------------------------------------------------
    def rtt_map_unprotected(self, ipa, level, ns_pa):
        """RMI_RTT_MAP_UNPROTECTED: UNASSIGNED_NS becomes ASSIGNED_NS -> ``ns_pa``."""
        if level not in (2, 3):
            return _INPUT
        if ns_pa % (_map_pages(level) << GRANULE_SHIFT):
            return _INPUT  # host_ns_s2tte_is_valid: output address aligned to the level
        if ipa >= self.ipa_size or not self._aligned(ipa, level) or self.is_protected(ipa):
            return _INPUT
        last = self._walk(ipa, level)
        if last != level:
            return _rtt(last)
        page = ipa >> GRANULE_SHIFT
        n = _map_pages(level)
        if self.level(ipa) != level or self._entries.get(page) != _UNASSIGNED_NS:
            return _rtt(level)
        self._entries.set(page, page + n, _pack(_Hipas.ASSIGNED, _Ripas.EMPTY, ns_pa >> GRANULE_SHIFT, page))
        return _OK

    def rtt_unmap_unprotected(self, ipa, level):
        """RMI_RTT_UNMAP_UNPROTECTED: ASSIGNED_NS becomes UNASSIGNED_NS. x1 = next IPA [U]."""
        if level not in (2, 3):
            return _INPUT
        if ipa >= self.ipa_size or not self._aligned(ipa, level) or self.is_protected(ipa):
            return _INPUT
        page = ipa >> GRANULE_SHIFT
        n = _map_pages(level)
        last = self._walk(ipa, level)
        v = self._entries.get(page)
        if last != level or self.level(ipa) != level or _hipas(v) != _Hipas.ASSIGNED:
            return _rtt(last, (page + n) << GRANULE_SHIFT)
        self._entries.set(page, page + n, _UNASSIGNED_NS)
        return RmiResult(_OK.ret, (page + n) << GRANULE_SHIFT)

    # -- batch forms KVM's side uses (one call per range, never per page) ------------------------
    def missing_tables(self, level, ipa, end):
        """IPAs of the ``level`` (2 or 3) RTTs that [ipa, end) needs and that are missing,
        in order (KVM creates them on RMI_ERROR_RTT)."""
        # (_tables_of / _table_shift, inlined: every realm fault asks here)
        m, sh = (self._l2, _L1_PAGES_SHIFT) if level == 2 else (self._l3, _L2_PAGES_SHIFT)
        lo = (ipa >> GRANULE_SHIFT) >> sh
        hi = (((end >> GRANULE_SHIFT) - 1) >> sh) + 1
        if m.find(lo, hi, 0) == -1:
            return []  # every table is there (the common case)
        out = []
        for s, e, v in m.ranges(lo, hi):
            if not v:
                out.extend([t << (sh + GRANULE_SHIFT) for t in range(s, e)])
        return out

    def map_unprotected_range(self, ipa, size, ns_pa):
        """RTT_UNPROT_MAP / RTT_MAP_UNPROTECTED at level 3 over [ipa, ipa + size) (an
        unprotected IPA) to NS memory from ``ns_pa``: entries already mapped there are
        left alone. Needs level-3 RTTs. Returns the RmiResult."""
        if ipa % GRANULE_SIZE or size <= 0 or size % GRANULE_SIZE or ns_pa % GRANULE_SIZE:
            return _INPUT
        if self.is_protected(ipa) or ipa + size > self.ipa_size:
            return _INPUT
        page, n = ipa >> GRANULE_SHIFT, size >> GRANULE_SHIFT
        if self._pages_at_level3(page, n) != n:
            return _rtt(self.level(ipa))
        frame = ns_pa >> GRANULE_SHIFT
        self._entries.set(page, page + n, _pack(_Hipas.ASSIGNED, _Ripas.EMPTY, frame, page))
        return _OK

    def unmap_unprotected_range(self, ipa, size):
        """RTT_UNPROT_UNMAP over [ipa, ipa + size): ASSIGNED_NS entries become UNASSIGNED_NS."""
        if ipa % GRANULE_SIZE or size <= 0 or size % GRANULE_SIZE or self.is_protected(ipa):
            return _INPUT
        page, n = ipa >> GRANULE_SHIFT, size >> GRANULE_SHIFT
        self._entries.set(page, min(page + n, self.ipa_size >> GRANULE_SHIFT), _UNASSIGNED_NS)
        return _OK

    def unassigned_runs(self, ipa, end):
        """(ipa_start, ipa_end) of the protected UNASSIGNED runs in [ipa, end)."""
        lo, hi = ipa >> GRANULE_SHIFT, min(end, self.par_size) >> GRANULE_SHIFT
        if lo >= hi:
            return []
        return [(s << GRANULE_SHIFT, e << GRANULE_SHIFT)
                for s, e, v in self._entry_runs(lo, hi) if v & 3 == _Hipas.UNASSIGNED]

    def ripas_runs(self, ipa, end):
        """(ipa_start, ipa_end, Ripas) of the protected IPAs [ipa, end), in order (what
        ``runs`` gives without HIPAS and PA; runs of equal RIPAS may follow each other)."""
        lo, hi = ipa >> GRANULE_SHIFT, min(end, self.par_size) >> GRANULE_SHIFT
        return [(s << GRANULE_SHIFT, e << GRANULE_SHIFT, _RIPAS[(v >> _RIPAS_SHIFT) & 3])
                for s, e, v in self._entry_runs(lo, hi)] if lo < hi else []

    def assigned_runs(self, ipa, end):
        """(ipa_start, ipa_end, ripas, pa_start) of the protected ASSIGNED runs in [ipa, end)."""
        lo, hi = ipa >> GRANULE_SHIFT, min(end, self.par_size) >> GRANULE_SHIFT
        if lo >= hi:
            return []
        return [(s << GRANULE_SHIFT, e << GRANULE_SHIFT, _ripas(v), _frame(v, s) << GRANULE_SHIFT)
                for s, e, v in self._entry_runs(lo, hi) if v & 3 == _Hipas.ASSIGNED]

    def teardown(self):
        """What REALM_DESTROY leaves once KVM destroyed every DATA granule and RTT (the
        realm is DYING): those granules go back to DELEGATED; returns their runs as
        (pa, npages) for KVM to undelegate. The RD is not included."""
        g = self.granules
        runs = []
        for s, e, _rp, pa in self.assigned_runs(0, self.par_size):
            n = (e - s) >> GRANULE_SHIFT
            g.set_state(g.index(pa), n, _GranuleState.DELEGATED)
            runs.append((pa, n))
        for m in (self._l3, self._l2):
            for s, e, v in m.ranges(0, len(m)):
                if v:
                    for t in range(s, e):
                        idx = m.get(t) - 1
                        g.set_state(idx, 1, _GranuleState.DELEGATED)
                        runs.append((g.pa(idx), 1))
        npages = self.ipa_size >> GRANULE_SHIFT
        self._entries.set(0, npages, _U_EMPTY)
        self._l3.set(0, len(self._l3), 0)
        self._l2.set(0, len(self._l2), 0)
        return runs

    # -- realm state -----------------------------------------------------------------------------
    def activate(self):
        """RMI_REALM_ACTIVATE (realm.c): REALM_NEW -> REALM_ACTIVE, else ERROR_REALM."""
        if self.rmm_state != _RmmRealmState.NEW:
            return _REALM
        self.rmm_state = _RmmRealmState.ACTIVE
        return _OK

    # -- accesses by the realm -------------------------------------------------------------------
    def realm_access(self, ipa, fetch=False):
        """(Access, RttEntry) for one realm access at ``ipa`` (rmm A5.2 table, §3.3)."""
        e = self.entry(ipa)
        if not e.protected:
            if fetch:
                return Access.SEA, e
            return (Access.OK if e.hipas == _Hipas.ASSIGNED else Access.REC_EXIT), e
        if e.ripas == _Ripas.DESTROYED:
            return Access.DESTROYED, e
        if e.ripas == _Ripas.EMPTY:
            return Access.SEA, e
        return (Access.OK if e.hipas == _Hipas.ASSIGNED else Access.REC_EXIT), e


def _update_ripas(v, ripas, change_destroyed):
    """TF-RMM update_ripas for one run of equal entries: the new value, or None to stop."""
    # the fields as ints (what _hipas / _ripas / _with_ripas do, without three calls)
    cur = (v >> _RIPAS_SHIFT) & 3
    if v & 3 == _Hipas.TABLE:
        return None
    if cur == ripas:
        return v
    if cur == _Ripas.DESTROYED and not change_destroyed:
        return None
    return (v & ~(3 << _RIPAS_SHIFT)) | (int(ripas) << _RIPAS_SHIFT)


class Rec:
    """A REC's side of the RSI_IPA_STATE_SET protocol (rec->set_ripas in TF-RMM)."""

    def __init__(self, realm, rec_pa=None):
        self.realm = realm
        self.rec_pa = rec_pa
        self.running = False
        self.ripas_base = self.ripas_top = self.ripas_addr = 0
        self.ripas_value = _Ripas.EMPTY
        self.change_destroyed = False
        self.pending_exit = None

    @classmethod
    def create(cls, realm, rec_pa):
        """RMI_REC_CREATE reduced to the REC granule (DELEGATED -> REC): (RmiResult, Rec)."""
        g = realm.granules
        i = g.index(rec_pa)
        if i is None or g.in_state(i, 1, _GranuleState.DELEGATED) != 1:
            return _INPUT, None
        g.set_state(i, 1, _GranuleState.REC)
        return _OK, cls(realm, rec_pa)

    @property
    def ripas_pending(self):
        return self.ripas_base != self.ripas_top

    def ipa_state_set(self, base, top, ripas, flags=RSI_NO_CHANGE_DESTROYED):
        """RSI_IPA_STATE_SET: RsiResult(ERROR_INPUT) back to the realm, or the REC exit."""
        r = self.realm
        if (
            (ripas != _EMPTY and ripas != _RAM)
            or base % GRANULE_SIZE
            or top % GRANULE_SIZE
            or top <= base
            or top > r.par_size
        ):
            return RsiResult(_RSI_INPUT)
        self.ripas_base = self.ripas_addr = base
        self.ripas_top = top
        # Ripas(ripas), as a dict lookup (an enum call costs ~1 us; the value is EMPTY or RAM)
        self.ripas_value = value = _RIPAS_OF[ripas]
        # TF-RMM compares the whole X4 with RSI_CHANGE_DESTROYED (runtime/rsi/memory.c)
        self.change_destroyed = flags == RSI_CHANGE_DESTROYED
        # (RipasChangeExit(base, top, value), see _tuple_new)
        self.pending_exit = _tuple_new(RipasChangeExit, (base, top, value))
        return self.pending_exit

    def enter(self, flags=0):
        """RMI_REC_ENTER's completion of a pending request (rec.c complete_set_ripas):
        RsiResult(SUCCESS, new_base, ACCEPT/REJECT) for the realm, or None if none pending.
        A REJECT is only reported for a RAM request that did not reach ``top``."""
        if self.ripas_base == self.ripas_top:  # (not self.ripas_pending)
            return None
        reject = bool(flags & REC_ENTER_FLAG_RIPAS_RESPONSE)
        response = RSI_ACCEPT
        if self.ripas_value == _RAM and self.ripas_addr != self.ripas_top and reject:
            response = RSI_REJECT
        # (RsiResult(SUCCESS, ripas_addr, response), see _tuple_new)
        out = _tuple_new(RsiResult, (_RSI_SUCCESS, self.ripas_addr, response))
        self.ripas_base = self.ripas_top = 0
        self.pending_exit = None
        return out

    def ipa_state_get(self, base, end):
        """RSI_IPA_STATE_GET: (SUCCESS, top of the run with base's RIPAS, RIPAS)."""
        r = self.realm
        if base % GRANULE_SIZE or end % GRANULE_SIZE or base >= end or end > r.par_size:
            return RsiResult(_RsiStatus.ERROR_INPUT)
        ripas = r.entry(base).ripas
        top = end
        for s, _e, _h, rp, _pa in r.runs(base, end):
            if rp != ripas:
                top = s
                break
        return RsiResult(_RsiStatus.SUCCESS, top, int(ripas))
