"""The mock's state as ranges: plain, JSON-able data for failure reports and ``kmock dump``.

``capture(kernel)`` returns a dict, format ``VERSION`` (2); docs/snapshot-format.md is
the full description. In short::

    {"version": 2, "profile": "linux-6.18", "platform": "none",
     "vms": [{"id", "type", "vcpus": [ids], "dead": reason or None,
              "memslots": [{"as_id", "slot", "gpa", "size", "flags", "hva",
                            "guest_memfd": id or None, "guest_memfd_offset": bytes or None}],
              "private_gfns": [[start, end], ...],                # VM-level attributes
              "stage2": [[gpa, pfn, npages, perm], ...]}],        # coalesced leaves
     "guest_memfds": [{"id", "fds", "vm", "size", "flags", "pfn_base", "folio_pages",
                       "private", "allocated", "poisoned": [[start, end], ...],
                       "pinned": [[start, end, count], ...],
                       "split_folios": [[start, end], ...],        # folio indexes
                       "host_mappings": [{"offset", "length", "prot", "address"}],
                       "bindings": [{"start", "end", "vm", "as_id", "slot", "gpa"}],
                       "stage2": [{"start", "end", "vm", "gpa", "perm"}],
                       "iommu": [{"start", "end", "iommufd", "ioas", "iova", "kind",
                                  "pinned", "revoked"}]}],
     "iommufd": [{"id", "fds", "ioas": [{"id", "iova_alignment", "domains",
                  "areas": [{"iova", "length", "kind", "pinned", "revoked",
                             "guest_memfd", "page"}],
                  "domain_leaves": {domain id: [[iova, pfn, npages, perm], ...]}}],
                  "devices": [{"id", "hwpt"}]}],
     "arch": {plugin key: {"tables": [ArchTable], ...}},           # the kmock_snapshot hook
     "violations": [{"kind", "explanation", "vm", "vcpu", "gpa", "iova", "detail",
                     "text", "at": [{"guest_memfd", "page"}]}],
     "dma_faults": [str], "sigbus": [str],
     "trace": [{"i", "call", ...}]}                               # kmock.trace records

Page runs are half-open ``[start, end)`` page indexes (4 KiB pages) of the file; only
runs with a non-zero value are listed (shared, unallocated, unpinned, healthy pages are
the gaps). Everything is read through RangeMap.ranges() and PageTable.runs(), so the
cost is proportional to the number of runs, never to the number of pages.

Architecture tables: a plugin's ``kmock_snapshot(kernel, snapshot)`` receives, under
``capture``, an :class:`ArchSection` (a dict, ``snapshot["arch"]``) and adds its state
under its own key, preferably with ``snapshot.add_table(key, name, runs, space=...)``
so that ``kmock dump`` draws it (see ``ArchSection.add_table``).
"""

VERSION = 2

_PRIVATE = 1 << 3  # KVM_MEMORY_ATTRIBUTE_PRIVATE
PAGE_SHIFT = 12
#: the spaces an architecture table's runs may be indexed by
ARCH_SPACES = ("pfn", "gpa", "gfn", "gmem_page")


def _runs(rangemap, npages, with_value=False):
    """Non-zero runs of a RangeMap over [0, npages) (None -> no runs)."""
    if rangemap is None or npages == 0:
        return []
    if with_value:
        return [[s, e, v] for s, e, v in rangemap.ranges(0, npages) if v]
    return [[s, e] for s, e, v in rangemap.ranges(0, npages) if v]


def _bit_runs(rangemap, npages, bit):
    out = []
    for s, e, v in rangemap.ranges(0, npages):
        if v & bit:
            if out and out[-1][1] == s:
                out[-1][1] = e
            else:
                out.append([s, e])
    return out


def kernel_fds(kernel):
    """The open fds of files kmock emulates."""
    return sorted(kernel.fdtable.fds())


def _stage2_runs(vm):
    pt = getattr(vm, "stage2", None)
    pt = getattr(pt, "pt", pt)  # a Stage2 wrapper or the PageTable itself
    if pt is None or not hasattr(pt, "runs"):
        return []
    return [[gpa, pfn, n, perm] for gpa, pfn, n, perm in pt.runs()]


class ArchSection(dict):
    """``snapshot["arch"]`` while plugins fill it: a dict with helpers.

    ``vm_id(vm)`` / ``gmem_id(inode)``: the ids this snapshot gives a VM object and a
    guest_memfd inode (None when not in it). ``add_table(...)``: add a table that
    ``kmock dump`` lists and draws.
    """

    def __init__(self, vm_ids, gmem_ids):
        super().__init__()
        self._vm_ids = vm_ids
        self._gmem_ids = gmem_ids

    def vm_id(self, vm):
        return self._vm_ids.get(id(vm))

    def gmem_id(self, inode):
        return self._gmem_ids.get(id(inode))

    def add_table(self, key, name, runs, space="pfn", vm=None, guest_memfd=None, legend=None):
        """Add an architecture table under ``self[key]["tables"]``.

        ``runs``: ``[[start, end, state], ...]`` half-open ranges of ``space``:
        ``"pfn"`` host frames (kernel.physmem's frame space: SNP's RMP, CCA's
        granules), ``"gpa"`` / ``"gfn"`` guest physical addresses / frames of ``vm``
        (TDX's S-EPT, CCA's RTT and RIPAS), ``"gmem_page"`` page indexes of the
        guest_memfd ``guest_memfd`` (an inode). ``state``: an int or a short string;
        ``legend`` maps a state to a label. Runs with a falsy state are gaps.
        ``vm`` / ``guest_memfd``: the object (turned into the snapshot's id).
        Cost: the caller passes runs (from RangeMap.ranges / PageTable.runs), never pages.
        """
        if space not in ARCH_SPACES:
            raise ValueError(f"space must be one of {ARCH_SPACES}, not {space!r}")
        table = {"name": name, "space": space,
                 "vm": None if vm is None else self.vm_id(vm),
                 "guest_memfd": None if guest_memfd is None else self.gmem_id(guest_memfd),
                 "runs": [[int(s), int(e), st if isinstance(st, (int, str)) else str(st)]
                          for s, e, st in runs if st],
                 "legend": {str(k): str(v) for k, v in (legend or {}).items()}}
        self.setdefault(key, {}).setdefault("tables", []).append(table)
        return table


def _guest_memfd(inode, gid, fds, vm_id):
    n = inode.npages
    fp = getattr(inode, "folio_pages", 1)
    split = getattr(inode, "split", None)
    return {
        "id": gid,
        "fds": fds,
        "vm": vm_id,
        "size": inode.size,
        "flags": inode.flags,
        "pfn_base": inode.pfn_base,
        "folio_pages": fp,
        "private": _bit_runs(inode.attrs, n, _PRIVATE),
        "allocated": _runs(inode.allocated, n),
        "pinned": _runs(getattr(inode, "pins", None), n, with_value=True),
        "poisoned": _runs(getattr(inode, "poisoned", None), n),
        "split_folios": _runs(split, (n + fp - 1) // fp) if split is not None else [],
        "host_mappings": sorted(
            ({"offset": m.offset, "length": m.length, "prot": m.prot, "address": m.address}
             for m in list(getattr(inode, "mappings", ())) if not m.closed),
            key=lambda d: (d["offset"], d["address"])),
        "bindings": [],
        "stage2": [],
        "iommu": [],
    }


def _ioas(ioas, file_gmem_ids, inode_ids):
    areas = []
    for a in ioas.areas:
        pages = a.pages
        inode = getattr(pages, "inode", None)
        d = {"iova": a.iova, "length": a.length, "kind": pages.kind, "pinned": pages.pinned,
             "revoked": a.revoked, "guest_memfd": None, "page": None}
        if inode is not None and id(inode) in inode_ids:
            d["guest_memfd"] = inode_ids[id(inode)]
            d["page"] = pages.first_page() + (a.offset >> PAGE_SHIFT)
        areas.append(d)
    leaves = {}
    for dom in ioas.domains:
        table = getattr(dom, "table", None)
        leaves[str(dom.id)] = [] if table is None else [list(r) for r in table.runs()]
    return {"id": ioas.id, "iova_alignment": ioas.iova_alignment,
            "domains": [d.id for d in ioas.domains], "areas": areas, "domain_leaves": leaves}


def _iommufd(ictx, fds, ictx_id, inode_ids):
    out = {"id": ictx_id, "fds": fds, "ioas": [], "devices": []}
    for obj in sorted(ictx.objects.values(), key=lambda o: o.id):
        if obj.object_type == "ioas":
            out["ioas"].append(_ioas(obj, None, inode_ids))
        elif obj.object_type == "device":
            out["devices"].append({"id": obj.id, "hwpt": obj.hwpt.id if obj.hwpt else None})
    return out


def _overlay(gmems, pfn_index, vm_id, stage2):
    """Stage-2 leaves that map guest_memfd frames, as page runs of each guest_memfd."""
    for gpa, pfn, n, perm in stage2:
        for base, end, g in pfn_index:
            lo, hi = max(pfn, base), min(pfn + n, end)
            if lo < hi:
                g["stage2"].append({"start": lo - base, "end": hi - base, "vm": vm_id,
                                    "gpa": gpa + ((lo - pfn) << PAGE_SHIFT), "perm": perm})


def _violation(v, vm_ids):
    if hasattr(v, "as_dict"):
        d = v.as_dict()
        d["vm"] = vm_ids.get(id(v.vm)) if v.vm is not None else None
    elif isinstance(v, dict):
        d = {k: val if isinstance(val, (int, str, bool, float, type(None))) else repr(val)
             for k, val in v.items()}
        d.setdefault("kind", "unknown")
    else:
        d = {"kind": type(v).__name__}
    d["text"] = str(v)
    d["at"] = []
    return d


def _gpa_to_gmem(vm_snap, gpa):
    for s in vm_snap["memslots"]:
        if s["guest_memfd"] is not None and s["gpa"] <= gpa < s["gpa"] + s["size"]:
            return s["guest_memfd"], (s["guest_memfd_offset"] + gpa - s["gpa"]) >> PAGE_SHIFT
    return None


def _iova_to_gmem(iommufds, iova):
    out = []
    for i in iommufds:
        for ioas in i["ioas"]:
            for a in ioas["areas"]:
                if a["guest_memfd"] is not None and a["iova"] <= iova < a["iova"] + a["length"]:
                    out.append((a["guest_memfd"], a["page"] + ((iova - a["iova"]) >> PAGE_SHIFT)))
    return out


def _trace_record(t):
    if isinstance(t, dict):
        return t
    name, args, res = (list(t) + [None, None, None])[:3]
    rec = {"call": name, "args": list(args or [])}
    if res is not None:
        rec["result"] = res
    return rec


def capture(kernel, trace=None):
    """The state of ``kernel`` (a kmock.Kernel) as plain data; see the module docstring.

    ``trace``: the last syscalls: kmock.trace records (dicts), or (name, args,
    result) triples already made printable by the caller (the pytest plugin passes
    the patcher's tail). By default the tail of ``kernel.trace`` when the Kernel
    records one.
    """
    if not trace and getattr(kernel, "trace", None) is not None:
        trace = kernel.trace.records
    fds = kernel_fds(kernel)
    files = {}  # id(file) -> (file, [fds])
    for fd in fds:
        f = kernel.file(fd)
        files.setdefault(id(f), (f, []))[1].append(fd)
    vms, inodes, ictxs = {}, {}, {}
    for f, ffds in files.values():
        ft = f.file_type
        vm = getattr(f, "vm", None)
        if vm is not None:
            vms.setdefault(id(vm), vm)
        if ft == "gmem":
            inodes.setdefault(id(f.inode), (f.inode, [], vm))[1].extend(ffds)
        elif ft == "iommufd":
            ictxs.setdefault(id(f), (f, []))[1].extend(ffds)
    for dev in getattr(kernel, "vfio_devices", {}).values():  # bound through a closed fd
        ictx = getattr(getattr(dev, "idev", None), "ictx", None)
        if ictx is not None:
            ictxs.setdefault(id(ictx), (ictx, []))
    vm_ids = {key: i for i, key in enumerate(vms)}
    gmem_ids = {key: i for i, key in enumerate(inodes)}
    file_gmem = {}  # id(gmem file) -> guest_memfd id, for the memslots
    for f, _ in files.values():
        if f.file_type == "gmem":
            file_gmem[id(f)] = gmem_ids[id(f.inode)]

    gmems = [_guest_memfd(inode, gmem_ids[key], sorted(ffds),
                          vm_ids.get(id(vm)) if vm is not None else None)
             for key, (inode, ffds, vm) in inodes.items()]
    pfn_index = [(g["pfn_base"], g["pfn_base"] + (g["size"] >> PAGE_SHIFT), g) for g in gmems]
    out_vms = []
    n_as = getattr(kernel.profile, "nr_memslot_as_ids", 1)
    for key, vm in vms.items():
        slots = []
        for as_id in range(n_as):
            for s in vm.memslots(as_id):
                gf = s.gmem_file
                gid = None if gf is None else file_gmem.get(
                    id(gf), gmem_ids.get(id(getattr(gf, "inode", None))))
                slots.append({
                    "as_id": s.as_id, "slot": s.id, "gpa": s.base_gfn << PAGE_SHIFT,
                    "size": s.npages << PAGE_SHIFT, "flags": s.flags, "hva": s.userspace_addr,
                    "guest_memfd": gid,
                    "guest_memfd_offset": None if gf is None else s.gmem_pgoff << PAGE_SHIFT})
                if gid is not None:
                    gmems[gid]["bindings"].append({
                        "start": s.gmem_pgoff, "end": s.gmem_pgoff + s.npages,
                        "vm": vm_ids[key], "as_id": s.as_id, "slot": s.id,
                        "gpa": s.base_gfn << PAGE_SHIFT})
        attrs = getattr(vm, "mem_attrs", None)
        stage2 = _stage2_runs(vm)
        _overlay(gmems, pfn_index, vm_ids[key], stage2)
        out_vms.append({"id": vm_ids[key], "type": vm.type, "vcpus": sorted(vm.vcpus),
                        "dead": (str(getattr(vm, "dead_reason", None) or "dead")
                                 if getattr(vm, "dead", False) else None),
                        "memslots": slots,
                        "private_gfns": [] if attrs is None else _bit_runs(attrs, len(attrs),
                                                                          _PRIVATE),
                        "stage2": stage2})
    iommufds = [_iommufd(ictx, sorted(ffds), n, gmem_ids)
                for n, (ictx, ffds) in enumerate(ictxs.values())]
    for i in iommufds:
        for ioas in i["ioas"]:
            for a in ioas["areas"]:
                if a["guest_memfd"] is not None:
                    g = gmems[a["guest_memfd"]]
                    g["iommu"].append({"start": a["page"],
                                       "end": a["page"] + ((a["length"] + 4095) >> PAGE_SHIFT),
                                       "iommufd": i["id"], "ioas": ioas["id"], "iova": a["iova"],
                                       "kind": a["kind"], "pinned": a["pinned"],
                                       "revoked": a["revoked"]})
    violations = [_violation(v, vm_ids) for v in getattr(kernel, "violations", ())]
    for v in violations:
        at = []
        if isinstance(v.get("gpa"), int) and v.get("vm") is not None and v["vm"] < len(out_vms):
            hit = _gpa_to_gmem(out_vms[v["vm"]], v["gpa"])
            at += [hit] if hit else []
        elif isinstance(v.get("gpa"), int):
            for vs in out_vms:
                hit = _gpa_to_gmem(vs, v["gpa"])
                at += [hit] if hit else []
        if isinstance(v.get("iova"), int):
            at += _iova_to_gmem(iommufds, v["iova"])
        v["at"] = [{"guest_memfd": g, "page": p} for g, p in at]
    out = {
        "version": VERSION,
        "profile": kernel.profile.name,
        "platform": getattr(kernel.profile, "platform", "none"),
        "vms": out_vms,
        "guest_memfds": gmems,
        "iommufd": iommufds,
        "arch": {},
        "violations": violations,
        "dma_faults": [str(d) for d in getattr(kernel, "dma_faults", ())],
        "sigbus": [str(s) for s in getattr(kernel, "sigbus_log", ())],
        "trace": [_trace_record(t) for t in (trace or ())],
    }
    hook = getattr(kernel.pm.hook, "kmock_snapshot", None)
    if hook is not None and hook.get_hookimpls():
        section = ArchSection(vm_ids, gmem_ids)
        hook(kernel=kernel, snapshot=section)
        out["arch"] = dict(section)
    return out


def _show(a):
    return f"{a:#x}" if isinstance(a, int) and a > 255 else repr(a) if isinstance(a, str) \
        else str(a)


def format_text(snap, max_runs=16):
    """A short human-readable rendering of a snapshot (for the pytest failure report)."""
    lines = [f"kmock {snap['profile']} (platform {snap.get('platform', 'none')}), "
             f"snapshot format {snap['version']}"]

    def runs(rs):
        shown = ", ".join(
            f"{r[0]:#x}-{r[1]:#x}" + (f" x{r[2]}" if len(r) > 2 else "") for r in rs[:max_runs])
        more = f" (+{len(rs) - max_runs} more)" if len(rs) > max_runs else ""
        return (shown or "-") + more

    for vm in snap["vms"]:
        lines.append(f"VM {vm['id']}: type {vm['type']}, vCPUs {vm['vcpus']}, private gfns "
                     f"{runs(vm.get('private_gfns', []))}")
        for s in vm["memslots"]:
            g = "" if s.get("guest_memfd_offset") is None else (
                f" guest_memfd {s.get('guest_memfd')} @ {s['guest_memfd_offset']:#x}")
            lines.append(f"  memslot {s['as_id']}:{s['slot']} gpa {s['gpa']:#x} "
                         f"size {s['size']:#x} flags {s['flags']:#x}{g}")
        st = vm["stage2"]
        lines.append("  stage-2 leaves (gpa, pfn, pages, perm): " + (", ".join(
            f"{g:#x}:{p:#x}x{n}/{perm:#x}" for g, p, n, perm in st[:max_runs]) or "-")
            + (f" (+{len(st) - max_runs} more)" if len(st) > max_runs else ""))
    for g in snap["guest_memfds"]:
        lines.append(f"guest_memfd {g['id']} fds {g['fds']} VM {g['vm']} size {g['size']:#x} "
                     f"flags {g['flags']:#x} (page runs [start, end))")
        lines.append(f"  private:   {runs(g['private'])}   (shared: the gaps)")
        lines.append(f"  allocated: {runs(g['allocated'])}")
        lines.append(f"  pinned:    {runs(g['pinned'])}")
        lines.append(f"  poisoned:  {runs(g['poisoned'])}")
        for m in g["host_mappings"]:
            lines.append(f"  host mapping offset {m['offset']:#x} length {m['length']:#x} "
                         f"prot {m['prot']} at {m['address']:#x}")
    for i in snap["iommufd"]:
        lines.append(f"iommufd fds {i['fds']}")
        for ioas in i.get("ioas", []):
            lines.append(f"  IOAS {ioas['id']} domains {ioas['domains']}")
            for a in ioas["areas"]:
                lines.append(f"    area iova {a['iova']:#x} length {a['length']:#x} {a['kind']} "
                             f"pinned={a['pinned']} revoked={a['revoked']}")
        for d in i.get("devices", []):
            lines.append(f"  device {d['id']} hwpt {d['hwpt']}")
    for key, section in snap["arch"].items():
        tables = section.get("tables", []) if isinstance(section, dict) else []
        for t in tables:
            lines.append(f"arch {key} {t['name']} ({t['space']}"
                         + (f", VM {t['vm']}" if t.get("vm") is not None else "") + "): "
                         + runs(t["runs"]))
        rest = {k: v for k, v in section.items() if k != "tables"} if isinstance(
            section, dict) else section
        if rest:
            lines.append(f"arch {key}: {rest!r}")
    for title, key in (("violations", "violations"), ("DMA faults", "dma_faults"),
                       ("SIGBUS", "sigbus")):
        if snap[key]:
            lines.append(f"{title}:")
            lines.extend(f"  {v['text'] if isinstance(v, dict) else v}" for v in snap[key])
    if snap["trace"]:
        lines.append("last syscalls:")
        lines.extend(f"  {trace_line(t)}" for t in snap["trace"])
    return "\n".join(lines)


def trace_line(rec):
    """One trace record (kmock.trace) as a line of text."""
    if rec.get("call") == "ioctl" and "request" in rec:
        a = rec.get("arg", {})
        arg = a.get("struct") or _show(a.get("int", 0))
        call = f"ioctl({rec.get('fd')}, {rec['request']}, {arg})"
    else:
        call = f"{rec.get('call')}({', '.join(map(_show, rec.get('args', [])))})"
    if "errno" in rec:
        return f"{call} -> {rec.get('errname', rec['errno'])}"
    res = rec.get("result")
    if isinstance(res, dict):
        res = f"mapping {res['mapping']:#x}" if "mapping" in res else res
    tail = f" [{rec['exit']['name']}]" if "exit" in rec else ""
    return call + ("" if res is None else f" -> {res}") + tail
