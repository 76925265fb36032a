"""A picture of a snapshot (kmock.snapshot): each guest_memfd's page space, with matplotlib.

One panel per guest_memfd; its x axis is the file's page space, drawn to scale.
Rows, top to bottom:

``attributes`` shared / private, over the whole file
``pages``     colour bands: shared (allocated), private (allocated), unallocated,
              poisoned on top
``pinned``    pinned pages (a pin blocks conversion to private)
``memslots``  memslot bindings (labelled with the slot and its GPA)
``host mmap`` host mappings of the file
``stage-2``   stage-2 leaves that map the file's frames
``IOMMU``     IOMMU areas (MAP_FILE of the guest_memfd, or a user VA inside its
              mapping); a revoked area is hatched; the part over private pages is
              outlined in red (a stale or forbidden device mapping)
``<arch>``    one row per architecture table a plugin added (ArchSection.add_table)

Violations are red markers at the page they concern, labelled with their kind.
A run narrower than ``MIN_WIDTH`` of the axis is widened to it, so a 4 KiB run in
a 4 TiB file stays visible. Every band carries an SVG id (``gid``) of the form
``band-<row>-<guest_memfd id>`` (``violation-<id>`` for markers) so that a test or a
tool can find it.
"""


PAGE_SHIFT = 12
#: the narrowest a run is drawn, as a fraction of the page space
MIN_WIDTH = 0.004
COLOURS = {
    "shared": "#4caf50",
    "private": "#7e57c2",
    "unallocated": "#e0e0e0",
    "poisoned": "#d32f2f",
    "pinned": "#ff9800",
    "memslots": "#1e88e5",
    "host mmap": "#26a69a",
    "stage-2": "#5c6bc0",
    "IOMMU": "#8d6e63",
    "arch": "#78909c",
}
ROWS = ("attributes", "pages", "pinned", "memslots", "host mmap", "stage-2", "IOMMU")


def _intersect(a, b):
    """Intersection of two sorted lists of [start, end) runs."""
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append([lo, hi])
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(a, b):
    """Runs of ``a`` not covered by ``b`` (both sorted, [start, end))."""
    out = []
    for s, e in a:
        pos = s
        for bs, be in b:
            if be <= pos or bs >= e:
                continue
            if bs > pos:
                out.append([pos, bs])
            pos = max(pos, be)
        if pos < e:
            out.append([pos, e])
    return out


def _human(nbytes):
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0 or nbytes >= 10 << shift:
            v = nbytes / (1 << shift)
            return f"{v:g} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{nbytes} B"


def arch_rows(snap, g):
    """(label, [[start, end, state], ...], legend) of the arch tables on guest_memfd ``g``,
    as page runs of the file."""
    rows = []
    npages = g["size"] >> PAGE_SHIFT
    base = g["pfn_base"]
    for key, section in snap.get("arch", {}).items():
        if not isinstance(section, dict):
            continue
        for t in section.get("tables", []):
            runs = []
            if t["space"] == "gmem_page":
                if t.get("guest_memfd") == g["id"]:
                    runs = [list(r) for r in t["runs"]]
            elif t["space"] == "pfn":
                for s, e, st in t["runs"]:
                    lo, hi = max(s, base), min(e, base + npages)
                    if lo < hi:
                        runs.append([lo - base, hi - base, st])
            else:  # gpa / gfn of a VM: through the memslot bindings of this file
                shift = PAGE_SHIFT if t["space"] == "gpa" else 0
                for b in g["bindings"]:
                    if t.get("vm") is not None and b["vm"] != t["vm"]:
                        continue
                    gfn0 = b["gpa"] >> PAGE_SHIFT
                    for s, e, st in t["runs"]:
                        s, e = s >> shift, (e + (1 << shift) - 1) >> shift
                        lo, hi = max(s, gfn0), min(e, gfn0 + b["end"] - b["start"])
                        if lo < hi:
                            runs.append([lo - gfn0 + b["start"], hi - gfn0 + b["start"], st])
            if runs:
                rows.append((f"{key} {t['name']}", runs, t.get("legend", {})))
    return rows


def figure(snap, title=None):
    """A matplotlib Figure of ``snap`` (a snapshot dict)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    gmems = snap["guest_memfds"]
    panels = []
    for g in gmems:
        panels.append((g, arch_rows(snap, g)))
    heights = [len(ROWS) + len(a) + 1.5 for _, a in panels] or [2]
    fig = Figure(figsize=(12, 1.4 + 0.42 * sum(heights)), layout="constrained")
    title = title or (f"kmock {snap['profile']} (platform {snap.get('platform', 'none')}): "
                      "guest_memfd page spaces")
    fig.suptitle(title, fontsize=11)
    if not panels:
        ax = fig.add_subplot(1, 1, 1)
        ax.text(0.5, 0.5, "no guest_memfd in this snapshot", ha="center", va="center")
        ax.set_axis_off()
        return fig
    axes = fig.subplots(len(panels), 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (g, archs) in zip(axes, panels):
        _panel(ax, snap, g, archs)
    handles = [Patch(color=COLOURS[k], label=k) for k in
               ("shared", "private", "unallocated", "poisoned", "pinned")]
    handles.append(Patch(facecolor="none", edgecolor="#d32f2f", linewidth=1.5,
                         label="IOMMU over private"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8,
               frameon=False)
    return fig


def _panel(ax, snap, g, archs):
    npages = max(1, g["size"] >> PAGE_SHIFT)
    minw = npages * MIN_WIDTH
    labels = list(ROWS) + [a[0] for a in archs]
    y = {name: len(labels) - 1 - i for i, name in enumerate(labels)}
    gid = g["id"]

    def bars(row, runs, colour, name=None, **kw):
        if not runs:
            return None
        spans = [(s, max(e - s, minw)) for s, e in runs]
        coll = ax.broken_barh(spans, (y[row] - 0.4, 0.8), facecolors=colour, **kw)
        coll.set_gid(f"band-{name or row}-{gid}")
        return coll

    allocated = [r[:2] for r in g["allocated"]]
    private = [r[:2] for r in g["private"]]
    everything = [[0, npages]]
    bars("attributes", _subtract(everything, private), COLOURS["shared"], "attr-shared",
         alpha=0.45)
    bars("attributes", private, COLOURS["private"], "attr-private", alpha=0.45)
    unalloc = _subtract(everything, allocated)
    bars("pages", unalloc, COLOURS["unallocated"], "unallocated")
    bars("pages", _subtract(allocated, private), COLOURS["shared"], "shared")
    bars("pages", _intersect(allocated, private), COLOURS["private"], "private")
    bars("pages", [r[:2] for r in g["poisoned"]], COLOURS["poisoned"], "poisoned")
    bars("pinned", [r[:2] for r in g["pinned"]], COLOURS["pinned"], "pinned")
    bars("memslots", [[b["start"], b["end"]] for b in g["bindings"]], COLOURS["memslots"],
         edgecolor="white")
    for b in g["bindings"]:
        ax.text((b["start"] + b["end"]) / 2, y["memslots"], f"slot {b['slot']} @ {b['gpa']:#x}",
                ha="center", va="center", fontsize=7, color="white", clip_on=True)
    bars("host mmap", [[m["offset"] >> PAGE_SHIFT, (m["offset"] + m["length"]) >> PAGE_SHIFT]
                       for m in g["host_mappings"]], COLOURS["host mmap"], "host-mmap")
    bars("stage-2", [[s["start"], s["end"]] for s in g["stage2"]], COLOURS["stage-2"],
         "stage-2")
    live = [[a["start"], a["end"]] for a in g["iommu"] if not a["revoked"]]
    revoked = [[a["start"], a["end"]] for a in g["iommu"] if a["revoked"]]
    bars("IOMMU", live, COLOURS["IOMMU"], "iommu")
    bars("IOMMU", revoked, "white", "iommu-revoked", edgecolor=COLOURS["IOMMU"], hatch="//")
    stale = _intersect(sorted(live), private)
    if stale:
        spans = [(s, max(e - s, minw)) for s, e in stale]
        coll = ax.broken_barh(spans, (y["IOMMU"] - 0.45, 0.9), facecolors="none",
                              edgecolors="#d32f2f", linewidth=1.5)
        coll.set_gid(f"band-iommu-private-{gid}")
    for label, runs, legend in archs:
        states = sorted({str(r[2]) for r in runs})
        for k, st in enumerate(states):
            colour = _arch_colour(k)
            coll = bars(label, [r[:2] for r in runs if str(r[2]) == st], colour,
                        f"arch-{label.replace(' ', '_')}-{st}")
            if coll is not None:
                coll.set_label(legend.get(st, st))
    viol = [v for v in snap.get("violations", []) for at in v.get("at", [])
            if at["guest_memfd"] == gid]
    shown = 0
    for n, v in enumerate(snap.get("violations", [])):
        for at in v.get("at", []):
            if at["guest_memfd"] != gid:
                continue
            x = at["page"] + 0.5
            line = ax.axvline(x, color="#d32f2f", linewidth=1, linestyle="--")
            line.set_gid(f"violation-{n}-{gid}")
            ax.plot([x], [len(labels) - 0.3], marker="v", color="#d32f2f", markersize=8,
                    clip_on=False)
            shown += 1
            ax.annotate(v.get("kind", "violation"), (x, len(labels) - 0.3),
                        xytext=(4, -10 * shown), textcoords="offset points", fontsize=7,
                        color="#d32f2f", backgroundcolor=(1, 1, 1, 0.8))
    ax.set_xlim(0, npages)
    ax.set_ylim(-0.6, len(labels) - 0.1)
    ax.set_yticks([y[name] for name in labels], labels, fontsize=8)
    ticks = [npages * f for f in (0, 0.25, 0.5, 0.75, 1)]
    ax.set_xticks(ticks, [_human(int(t) << PAGE_SHIFT) for t in ticks], fontsize=8)
    vm = "" if g.get("vm") is None else f", VM {g['vm']}"
    ax.set_title(f"guest_memfd {gid} (fds {g['fds']}{vm}): {_human(g['size'])}"
                 + (f", {len(viol)} violation(s)" if viol else ""), fontsize=9, loc="left")
    ax.grid(axis="x", color="#bbbbbb", linewidth=0.5)
    ax.set_axisbelow(True)


def _arch_colour(k):
    palette = ("#546e7a", "#ab47bc", "#29b6f6", "#ffca28", "#8d6e63", "#ec407a")
    return palette[k % len(palette)]


def save(snap, path, fmt=None):
    """Write the picture of ``snap`` to ``path`` (SVG or PNG, from ``fmt`` or the suffix)."""
    fig = figure(snap)
    fmt = fmt or str(path).rsplit(".", 1)[-1].lower()
    if fmt not in ("svg", "png"):
        raise ValueError(f"picture format must be svg or png, not {fmt!r}")
    # no creation date in the SVG: the same snapshot gives the same file
    fig.savefig(path, format=fmt, dpi=110, metadata={"Date": None} if fmt == "svg" else None)
    return path


__all__ = ["figure", "save", "arch_rows", "MIN_WIDTH", "COLOURS"]
