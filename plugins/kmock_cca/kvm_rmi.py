"""KVM's side of the RMI: the calls the CCA series makes, on ranges, against the RMM model.

Each helper is what one KVM function of the series does (v14 patch named in brackets),
reduced to calls of ``rtt`` (the RMM's tables): one call per run of equal entries or per
missing table, never per page.

* ``HostPool``: pages KVM gives the RMM for the RD, RECs and RTTs (delegated first).
* ``ensure_tables``: RTT_CREATE of the missing level-2 / level-3 tables (KVM creates them
  when a command fails with RMI_ERROR_RTT; ``realm_create_rtt_levels``, 27/44).
* ``populate``: GRANULE_DELEGATE + RTT_DATA_MAP_INIT (v12: DATA_CREATE), undelegating what
  was not mapped on failure (``realm_create_protected_data_page``, 26/44).
* ``map_protected``: the lazy mapping of a realm fault: delegate + RTT_DATA_MAP (v12:
  DATA_CREATE_UNKNOWN); RIPAS is kept (``realm_map_protected``, 29/44).
* ``unmap_protected``: RTT_DATA_UNMAP + undelegate: RAM becomes DESTROYED, EMPTY stays
  EMPTY (``realm_unmap_private_range``, 23/44).
* ``init_ripas`` / ``set_ripas``: RTT_INIT_RIPAS over a memslot (27/44) and RTT_SET_RIPAS
  for a REC's request (``ripas_change``, 23/44), creating tables on ERROR_RTT.
"""

import errno
import threading

from kmock.errors import oserror

from .rtt import GRANULE_SHIFT, GRANULE_SIZE, _RmiStatus

POOL_PAGES = 1 << 18


#: the RMI commands KVM issues that kmock can fail (``cca.rmi.<name>``), all -> ENXIO
POINTS = ("granule_delegate", "realm_create", "rec_create", "rtt_create", "data_create",
          "rtt_init_ripas", "realm_activate")


def rmi_failed(kernel, command):
    """Whether fault injection makes this RMI ``command`` fail (before it changes the
    RMM's state: a failed RMI command has no effect)."""
    return kernel.faults.armed and bool(
        kernel.faults.should_fail("cca.rmi." + command, errno.ENXIO))


class HostPool:
    """Host pages KVM allocates for RMM objects (RD, REC, RTT), from one frame range."""

    def __init__(self, kernel, granules):
        self.granules = granules
        self.kernel = kernel
        self.base = None
        self.next = 0
        self.free = []
        self.lock = threading.Lock()

    def take(self):
        """A delegated page: its PA."""
        with self.lock:
            if self.free:
                i = self.free.pop()
            else:
                if self.base is None or self.next == POOL_PAGES:
                    self.base, self.next = self.kernel.physmem.alloc_range(POOL_PAGES), 0
                i = self.base + self.next
                self.next += 1
        pa = i << GRANULE_SHIFT
        if rmi_failed(self.kernel, "granule_delegate") \
                or self.granules.delegate(pa).status != _RmiStatus.SUCCESS:
            with self.lock:
                self.free.append(i)
            raise oserror(errno.ENXIO)
        return pa

    def give(self, pa):
        """Undelegate a page KVM no longer needs and free it."""
        if self.granules.undelegate(pa).status == _RmiStatus.SUCCESS:
            with self.lock:
                self.free.append(pa >> GRANULE_SHIFT)


def ensure_tables(realm, pool, ipa, end):
    """RTT_CREATE every level-2 then level-3 table [ipa, end) needs."""
    if not realm.missing_tables(3, ipa, end):
        # every level-3 table is there, so is every level-2 one (RTT_CREATE needs the parent
        # table, RTT_DESTROY refuses a table with children): the common case, one query
        return
    for level in (2, 3):
        for t in realm.missing_tables(level, ipa, end):
            pa = pool.take()
            if rmi_failed(pool.kernel, "rtt_create") \
                    or realm.rtt_create(pa, t, level).status != _RmiStatus.SUCCESS:
                pool.give(pa)
                raise oserror(errno.ENXIO)


def _delegate(granules, pa, size):
    _r, done = granules.delegate_range(pa, size)
    if done != size:
        if done:
            granules.undelegate_range(pa, done)
        return False
    return True


def populate(realm, pool, ipa, pa, src_pa, size, measure):
    """POPULATE's callback for one run: bytes mapped; raises OSError(ENXIO) with ``done``
    (pages) when the RMM refused part of it."""
    g = realm.granules
    ensure_tables(realm, pool, ipa, ipa + size)
    if not _delegate(g, pa, size):
        raise oserror(errno.ENXIO)
    if rmi_failed(pool.kernel, "data_create"):
        g.undelegate_range(pa, size)
        raise oserror(errno.ENXIO)
    _r, done = realm.data_create_range(pa, ipa, src_pa, size, 1 if measure else 0)
    if done != size:
        g.undelegate_range(pa + done, size - done)
        e = oserror(errno.ENXIO)
        e.done = done >> GRANULE_SHIFT
        raise e
    return done


def map_protected(realm, pool, ipa, pa, size):
    """A realm fault KVM resolves: the UNASSIGNED entries of [ipa, ipa + size) get the
    frames from ``pa`` (delegate + RTT_DATA_MAP); ASSIGNED ones are left alone."""
    ensure_tables(realm, pool, ipa, ipa + size)
    g = realm.granules
    for s, e in realm.unassigned_runs(ipa, ipa + size):
        run_pa = pa + (s - ipa)
        if not _delegate(g, run_pa, e - s):
            continue  # "raced with another vCPU": return to the guest
        _r, done = realm.data_create_range(run_pa, s, None, e - s)
        if done != e - s:
            g.undelegate_range(run_pa + done, (e - s) - done)


def unmap_protected(realm, ipa, end):
    """RTT_DATA_UNMAP + undelegate over the ASSIGNED entries of [ipa, end).

    Returns the runs destroyed as (ipa_start, ipa_end, ripas before)."""
    out = []
    g = realm.granules
    for s, e, rp, pa in realm.assigned_runs(ipa, end):
        _r, done = realm.data_destroy_range(s, e - s)
        if done:
            g.undelegate_range(pa, done)
            out.append((s, s + done, rp))
    return out


def map_unprotected(realm, pool, ipa, ns_pa, size):
    """RTT_UNPROT_MAP (v12: RTT_MAP_UNPROTECTED) of an unprotected IPA range."""
    ensure_tables(realm, pool, ipa, ipa + size)
    realm.map_unprotected_range(ipa, size, ns_pa)


def _walk_ripas(realm, pool, base, top, rec):
    """Loop RTT_SET_RIPAS for ``rec``'s request (RTT_INIT_RIPAS when ``rec`` is None) from
    ``base`` to ``top``, creating a table where it reports RMI_ERROR_RTT below level 3.
    Returns the address reached."""
    while base < top:
        r = realm.rtt_init_ripas(base, top) if rec is None else realm.rtt_set_ripas(rec, base, top)
        status = r.ret & 0xFF  # (r.status, RMI_RETURN_STATUS, without the property's call)
        if status == _RmiStatus.SUCCESS:
            if r.x1 <= base:
                break
            base = r.x1
            continue
        if status == _RmiStatus.ERROR_RTT and r.index < 3:
            block = GRANULE_SIZE << (9 * (3 - r.index))
            ensure_tables(realm, pool, base & ~(block - 1), (base & ~(block - 1)) + block)
            continue
        break
    return base


def init_ripas(realm, pool, base, top):
    """RTT_INIT_RIPAS over [base, top); returns the address reached."""
    if rmi_failed(pool.kernel, "rtt_init_ripas"):
        return base
    return _walk_ripas(realm, pool, base, top, None)


def set_ripas(realm, rec, pool, base, top):
    """RTT_SET_RIPAS for ``rec``'s request over [base, top); returns the address reached.

    KVM's ``ripas_change`` would retry an entry the RMM refuses (a DESTROYED page without
    RSI_CHANGE_DESTROYED) forever [U]; kmock stops there and lets the realm see partial
    progress instead (a choice, docs/arch/cca.md)."""
    return _walk_ripas(realm, pool, base, top, rec)
