"""The mock's state as ranges: plain, JSON-able data for failure reports and ``kmock dump``.

``capture(kernel)`` returns a dict (format ``VERSION``)::

    {"version": 1, "profile": "linux-6.18",
     "vms": [{"id": 0, "type": 2, "vcpus": [0],
              "memslots": [{"as_id": 0, "slot": 0, "gpa": .., "size": .., "flags": ..,
                            "hva": .., "guest_memfd": 1 or None,
                            "guest_memfd_offset": .. or None}],
              "private_gfns": [[start, end], ...],  # KVM_SET_MEMORY_ATTRIBUTES (VM level)
              "stage2": [[gpa, pfn, npages, perm], ...]}],        # coalesced leaves
     "guest_memfds": [{"id": 1, "fds": [7], "vm": 0, "size": .., "flags": ..,
                       "private": [[start, end], ...],            # page indexes, [start, end)
                       "allocated": [[start, end], ...],
                       "pinned": [[start, end, count], ...],
                       "poisoned": [[start, end], ...],
                       "host_mappings": [{"offset": .., "length": .., "prot": .., "address": ..}]}],
     "iommufd": [{"fds": [9], "ioas": [...], "devices": [...]}],  # IommufdCtx.snapshot()
     "arch": {...},                                              # the kmock_snapshot hook
     "violations": ["...", ...],                                 # str() of each record
     "dma_faults": ["...", ...], "sigbus": ["...", ...],
     "trace": [[name, args, result or None], ...]}               # the caller's tail, if any

Page runs are half-open ``[start, end)`` page indexes (4 KiB pages) of the file; only
runs with a non-zero value are listed (shared, unallocated, unpinned, healthy pages are
the gaps). Everything is read through RangeMap.ranges() and PageTable.runs(), so the
cost is proportional to the number of runs, never to the number of pages.
"""


VERSION = 1

_PRIVATE = 1 << 3  # KVM_MEMORY_ATTRIBUTE_PRIVATE


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


def _guest_memfd(inode, gid, fds, vm_id):
    n = inode.npages
    return {
        "id": gid,
        "fds": fds,
        "vm": vm_id,
        "size": inode.size,
        "flags": inode.flags,
        "private": _bit_runs(inode.attrs, n, _PRIVATE),
        "allocated": _runs(inode.allocated, n),
        "pinned": _runs(getattr(inode, "pins", None), n, with_value=True),
        "poisoned": _runs(getattr(inode, "poisoned", None), n),
        "host_mappings": sorted(
            ({"offset": m.offset, "length": m.length, "prot": m.prot, "address": m.address}
             for m in list(getattr(inode, "mappings", ())) if not m.closed),
            key=lambda d: (d["offset"], d["address"])),
    }


def capture(kernel, trace=()):
    """The state of ``kernel`` (a kmock.Kernel) as plain data; see the module docstring.

    ``trace``: the last syscalls, as (name, args, result) triples already made
    printable by the caller (the pytest plugin passes the patcher's tail).
    """
    fds = kernel_fds(kernel)
    files = {}  # id(file) -> (file, [fds])
    for fd in fds:
        f = kernel.file(fd)
        files.setdefault(id(f), (f, []))[1].append(fd)
    vms, inodes, ictxs = {}, {}, []
    for f, ffds in files.values():
        ft = f.file_type
        vm = getattr(f, "vm", None)
        if vm is not None:
            vms.setdefault(id(vm), vm)
        if ft == "gmem":
            inodes.setdefault(id(f.inode), (f.inode, [], vm))[1].extend(ffds)
        elif ft == "iommufd":
            ictxs.append((f, ffds))
    vm_ids = {key: i for i, key in enumerate(vms)}
    gmem_ids = {key: i for i, key in enumerate(inodes)}
    file_gmem = {}  # id(gmem file) -> guest_memfd id, for the memslots
    for f, _ in files.values():
        if f.file_type == "gmem":
            file_gmem[id(f)] = gmem_ids[id(f.inode)]

    out_vms = []
    n_as = getattr(kernel.profile, "nr_memslot_as_ids", 1)
    for key, vm in vms.items():
        slots = []
        for as_id in range(n_as):
            for s in vm.memslots(as_id):
                gf = s.gmem_file
                slots.append({
                    "as_id": s.as_id, "slot": s.id, "gpa": s.base_gfn << 12,
                    "size": s.npages << 12, "flags": s.flags, "hva": s.userspace_addr,
                    "guest_memfd": None if gf is None else file_gmem.get(
                        id(gf), gmem_ids.get(id(getattr(gf, "inode", None)))),
                    "guest_memfd_offset": None if gf is None else s.gmem_pgoff << 12})
        attrs = getattr(vm, "mem_attrs", None)
        out_vms.append({"id": vm_ids[key], "type": vm.type, "vcpus": sorted(vm.vcpus),
                        "memslots": slots,
                        "private_gfns": [] if attrs is None else _bit_runs(attrs, len(attrs),
                                                                          _PRIVATE),
                        "stage2": _stage2_runs(vm)})
    out = {
        "version": VERSION,
        "profile": kernel.profile.name,
        "platform": getattr(kernel.profile, "platform", "none"),
        "vms": out_vms,
        "guest_memfds": [_guest_memfd(inode, gmem_ids[key], sorted(ffds),
                                      vm_ids.get(id(vm)) if vm is not None else None)
                         for key, (inode, ffds, vm) in inodes.items()],
        "iommufd": [dict(f.snapshot(), fds=ffds) for f, ffds in ictxs],
        "arch": {},
        "violations": [str(v) for v in getattr(kernel, "violations", ())],
        "dma_faults": [str(d) for d in getattr(kernel, "dma_faults", ())],
        "sigbus": [str(s) for s in getattr(kernel, "sigbus_log", ())],
        "trace": [list(t) for t in trace],
    }
    hook = getattr(kernel.pm.hook, "kmock_snapshot", None)
    if hook is not None and hook.get_hookimpls():
        hook(kernel=kernel, snapshot=out["arch"])
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
    if snap["arch"]:
        lines.append(f"arch: {snap['arch']!r}")
    for title, key in (("violations", "violations"), ("DMA faults", "dma_faults"),
                       ("SIGBUS", "sigbus")):
        if snap[key]:
            lines.append(f"{title}:")
            lines.extend(f"  {v}" for v in snap[key])
    if snap["trace"]:
        lines.append("last syscalls:")
        lines.extend(f"  {name}({', '.join(map(_show, args))})" + ("" if res is None else
                                                                   f" -> {res}")
                     for name, args, res in snap["trace"])
    return "\n".join(lines)
