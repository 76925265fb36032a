"""``kmock dump``: a snapshot (kmock.snapshot) as rich tables, JSON or a picture.

``render(snap, console)`` prints one table per kind of object: VMs and memslots,
guest_memfds with their page runs and overlays, IOMMU areas and domains,
architecture tables, violations and the trace tail. ``live(kernel, ...)`` does the
same for a running Kernel, from inside a test (``kmock.dump.live(kmock)`` with the
pytest fixture). ``load(path)`` reads a snapshot file and checks its version.

A kmock server (``kmock serve``, the preload work) will answer ``kmock dump --live
SOCKET``; until it exists, ``fetch_live`` raises LiveUnavailable with a clear message.
The seam: a module ``kmock.preload.client`` with ``snapshot(socket_path) -> dict``
(a format-2 snapshot).
"""

import json

from . import snapshot as snapmod

MAX_RUNS = 12


class SnapshotError(ValueError):
    """The file is not a kmock snapshot this version reads."""


class LiveUnavailable(RuntimeError):
    """No kmock server to ask for a live snapshot."""


def load(path):
    try:
        with open(path) as f:
            snap = json.load(f)
    except OSError as e:
        raise SnapshotError(f"cannot read {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise SnapshotError(f"{path} is not JSON: {e}") from None
    if not isinstance(snap, dict) or "version" not in snap or "guest_memfds" not in snap:
        raise SnapshotError(f"{path} is not a kmock snapshot (no version / guest_memfds)")
    if snap["version"] != snapmod.VERSION:
        raise SnapshotError(f"{path} has snapshot format {snap['version']}; this kmock reads "
                            f"format {snapmod.VERSION} (docs/snapshot-format.md)")
    return snap


def fetch_live(socket_path):
    """A snapshot from a running ``kmock serve`` / ``kmock run`` at ``socket_path``."""
    from .preload import dump_live

    try:
        return dump_live(socket_path)
    except OSError as e:
        raise LiveUnavailable(
            f"no kmock server answers at {socket_path} ({e.strerror or e}). Start one with "
            "kmock serve or kmock run; from inside a test, call kmock.dump.live(kernel).") from None


def _runs(rs, limit=MAX_RUNS):
    shown = ", ".join(f"{r[0]:#x}-{r[1]:#x}" + (f" x{r[2]}" if len(r) > 2 else "")
                      for r in rs[:limit])
    return (shown or "-") + (f" (+{len(rs) - limit} more)" if len(rs) > limit else "")


def _pages(n):
    return sum(r[1] - r[0] for r in n)


def render(snap, console=None, max_runs=MAX_RUNS):
    """Print ``snap`` as rich tables on ``console`` (a rich Console; stdout by default)."""
    from rich.console import Console
    from rich.table import Table

    c = console or Console()
    c.print(f"[bold]kmock snapshot[/bold] (format {snap['version']}): profile "
            f"{snap['profile']}, platform {snap.get('platform', 'none')}")

    t = Table(title="VMs and memslots", title_justify="left")
    for col in ("VM", "type", "vCPUs", "memslot", "gpa", "size", "flags", "guest_memfd @ offset"):
        t.add_column(col)
    for vm in snap["vms"]:
        first = True
        for s in vm["memslots"] or [None]:
            head = [str(vm["id"]), str(vm["type"]), str(vm["vcpus"])] if first else ["", "", ""]
            if vm.get("dead") and first:
                head[1] += f" [red](dead: {vm['dead']})[/red]"
            first = False
            if s is None:
                t.add_row(*head, "-", "", "", "", "")
                continue
            g = "-" if s["guest_memfd"] is None else f"{s['guest_memfd']} @ {s['guest_memfd_offset']:#x}"
            t.add_row(*head, f"{s['as_id']}:{s['slot']}", f"{s['gpa']:#x}", f"{s['size']:#x}",
                      f"{s['flags']:#x}", g)
    c.print(t)
    for vm in snap["vms"]:
        if vm["private_gfns"] or vm["stage2"]:
            c.print(f"VM {vm['id']}: private gfns {_runs(vm['private_gfns'], max_runs)}; "
                    f"{len(vm['stage2'])} stage-2 leaf run(s)")

    for g in snap["guest_memfds"]:
        t = Table(title=f"guest_memfd {g['id']} (fds {g['fds']}, VM {g['vm']}, size "
                        f"{g['size']:#x}, flags {g['flags']:#x}); page runs [start, end)",
                  title_justify="left")
        t.add_column("what")
        t.add_column("pages", justify="right")
        t.add_column("runs")
        for key in ("private", "allocated", "pinned", "poisoned", "split_folios"):
            rs = g.get(key, [])
            style = "red" if key == "poisoned" and rs else ""
            t.add_row(key, str(_pages(rs)), _runs(rs, max_runs), style=style)
        for b in g["bindings"]:
            t.add_row(f"memslot {b['as_id']}:{b['slot']} (VM {b['vm']})",
                      str(b["end"] - b["start"]), f"{b['start']:#x}-{b['end']:#x} @ gpa {b['gpa']:#x}")
        for m in g["host_mappings"]:
            t.add_row("host mapping", str(m["length"] >> 12),
                      f"{m['offset'] >> 12:#x}-{(m['offset'] + m['length']) >> 12:#x} prot "
                      f"{m['prot']} at {m['address']:#x}")
        if g["stage2"]:
            t.add_row("stage-2 leaves", str(sum(s["end"] - s["start"] for s in g["stage2"])),
                      _runs([[s["start"], s["end"]] for s in g["stage2"]], max_runs))
        for a in g["iommu"]:
            flag = " [red]revoked[/red]" if a["revoked"] else ""
            t.add_row(f"IOMMU area (IOAS {a['ioas']})", str(a["end"] - a["start"]),
                      f"{a['start']:#x}-{a['end']:#x} at iova {a['iova']:#x} {a['kind']}{flag}")
        c.print(t)

    if snap["iommufd"]:
        t = Table(title="iommufd: IOAS areas and domains", title_justify="left")
        for col in ("iommufd", "IOAS", "iova", "length", "kind", "pinned", "revoked",
                    "guest_memfd page", "domains"):
            t.add_column(col)
        for i in snap["iommufd"]:
            for ioas in i["ioas"]:
                doms = ", ".join(f"{d} ({len(ioas.get('domain_leaves', {}).get(str(d), []))} "
                                 "leaf runs)" for d in ioas["domains"]) or "-"
                for a in ioas["areas"] or [None]:
                    if a is None:
                        t.add_row(str(i["id"]), str(ioas["id"]), "-", "", "", "", "", "", doms)
                        continue
                    gp = "-" if a["guest_memfd"] is None else f"{a['guest_memfd']}:{a['page']:#x}"
                    t.add_row(str(i["id"]), str(ioas["id"]), f"{a['iova']:#x}",
                              f"{a['length']:#x}", a["kind"], str(a["pinned"]),
                              str(a["revoked"]), gp, doms)
            for d in i["devices"]:
                t.add_row(str(i["id"]), "", "", "", f"device {d['id']}", "", "", "",
                          f"hwpt {d['hwpt']}")
        c.print(t)

    for key, section in snap.get("arch", {}).items():
        tables = section.get("tables", []) if isinstance(section, dict) else []
        t = Table(title=f"architecture: {key}", title_justify="left")
        for col in ("table", "space", "VM", "runs [start, end) state"):
            t.add_column(col)
        for tab in tables:
            t.add_row(tab["name"], tab["space"], str(tab.get("vm")), _runs(tab["runs"], max_runs))
        rest = {k: v for k, v in section.items() if k != "tables"} if isinstance(
            section, dict) else {"state": section}
        for k, v in rest.items():
            t.add_row(str(k), "", "", repr(v)[:200])
        c.print(t)

    if snap["violations"] or snap["dma_faults"] or snap["sigbus"]:
        t = Table(title="violations", title_justify="left", style="red")
        t.add_column("kind")
        t.add_column("where")
        t.add_column("explanation")
        for v in snap["violations"]:
            where = ", ".join(f"{k} {v[k]:#x}" for k in ("gpa", "iova") if isinstance(v.get(k), int))
            where += "".join(f"; guest_memfd {a['guest_memfd']} page {a['page']:#x}"
                             for a in v.get("at", []))
            t.add_row(v.get("kind", "?"), where, v.get("explanation", v.get("text", "")))
        for d in snap["dma_faults"]:
            t.add_row("dma_fault", "", d)
        for s in snap["sigbus"]:
            t.add_row("sigbus", "", s)
        c.print(t)

    if snap["trace"]:
        t = Table(title="last syscalls", title_justify="left")
        t.add_column("#", justify="right")
        t.add_column("call")
        for n, rec in enumerate(snap["trace"]):
            t.add_row(str(rec.get("i", n)), snapmod.trace_line(rec))
        c.print(t)


def write_outputs(snap, svg=None, png=None, json_path=None):
    """Write the picture(s) and/or the JSON of ``snap``; returns the paths written."""
    written = []
    if svg or png:
        from . import picture

        for path, fmt in ((svg, "svg"), (png, "png")):
            if path:
                picture.save(snap, path, fmt)
                written.append(str(path))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(snap, f, indent=1, sort_keys=True)
        written.append(str(json_path))
    return written


def live(kernel, console=None, svg=None, png=None, json_path=None):
    """Dump a running Kernel now (from inside a test): tables, and files if asked for.

    Returns the snapshot."""
    snap = snapmod.capture(kernel)
    render(snap, console)
    write_outputs(snap, svg, png, json_path)
    return snap
