"""The kmock command line (typer + rich).

demo      a scripted VMM run on the mock, its story, the dump and a picture
dump      a snapshot file (kmock.snapshot) as tables, JSON or a picture
replay    re-execute a syscall trace (kmock.trace) on a fresh mock
sweep     the fail-nth sweep (kmock.testing.fail_nth) over the VMM scenarios
conform   the mock against the real /dev/kvm
bench     benchmarks
profiles  the kernel profiles
"""

import importlib.util
import os
import pathlib
import sys
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="kmock: a mock of the Linux KVM, guest_memfd and iommufd APIs for testing VMMs.",
)

#: the entry-point group through which an architecture plugin offers its demo
DEMO_GROUP = "kmock.demos"


def _version():
    try:
        from importlib.metadata import version

        return version("kmock")
    except Exception:
        return "unknown (not installed)"


def _version_callback(value: bool):
    if value:
        typer.echo(f"kmock {_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version_callback,
                                 is_eager=True, help="Print the kmock version and exit."),
):
    """kmock: a mock of the Linux KVM, guest_memfd and iommufd APIs for testing VMMs."""


def _fail(message, code=2):
    """A clear error line on stderr and an exit code, never a traceback."""
    typer.secho(f"kmock: {message}", err=True, fg="red")
    raise typer.Exit(code)


def _console():
    from rich.console import Console

    return Console(width=max(100, min(160, int(os.environ.get("COLUMNS", 120)))))


def _progress(console=None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


# --- conform ---------------------------------------------------------------------------------


@app.command()
def conform(
    scenario: List[str] = typer.Option(None, "--scenario", "-s", help="Run only these scenarios."),
    list_: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
):
    """Run every conformance scenario on the real /dev/kvm and on the mock; compare.

    Prints a table (scenario, host, mock, match) and a last line
    'conformance: N/M scenarios match'. Exits non-zero on any mismatch, and when
    there is no /dev/kvm to compare against.
    """
    from .testing.conformance import SCENARIOS
    from .testing.conformance import conform as run

    if list_:
        for name, fn in SCENARIOS.items():
            doc = (getattr(fn, "scenario_doc", "") or "").splitlines()
            typer.echo(f"{name:<40} {doc[0] if doc else ''}")
        return
    unknown = [s for s in scenario or () if s not in SCENARIOS]
    if unknown:
        _fail(f"unknown conformance scenario(s): {', '.join(unknown)} "
              "(kmock conform --list shows them)")
    matched, total = run(out=typer.echo, names=scenario or None)
    if total == 0 or matched != total:
        raise typer.Exit(1)


# --- bench -----------------------------------------------------------------------------------

BENCH_SUITES = {
    "core": "compiled memory core vs pure-Python twin",
    "syscalls": "mock (profile host) vs real kernel",
    "conversion": "guest_memfd conversions vs real 4K fallocate; 4 TiB scale",
    "iommufd": "MAP_FILE/UNMAP and DMA vs real 4K fallocate",
    "patching": "os/fcntl calls while kmock.patched is active vs unpatched; patched ioctl vs Kernel.ioctl",
    "longrun": "RSS after 10^6 guest exits and 10^5 logged SIGBUS (bounded history and logs)",
    "preload": "native tier: forwarded and pass-through calls vs the real kernel",
}


@app.command()
def bench(
    suite: str = typer.Argument("all", help="core | syscalls | conversion | iommufd | patching | longrun | preload | all"),
    quick: bool = typer.Option(False, "--quick", help="Small workloads (a smoke run)."),
):
    """Benchmarks: the compiled core against its pure twin, and the mock against the real
    kernel. Timings are reported, never asserted."""
    import importlib

    from . import compiled

    if suite != "all" and suite not in BENCH_SUITES:
        raise typer.BadParameter(f"suite must be one of {', '.join(BENCH_SUITES)} or all")
    chosen = [(n, w) for n, w in BENCH_SUITES.items() if suite in ("all", n)]
    with _progress() as progress:
        task = progress.add_task("kmock bench", total=len(chosen))
        for name, what in chosen:
            progress.update(task, description=f"bench {name}")
            typer.echo(f"== kmock bench {name}: {what} ==")
            importlib.import_module(f"kmock.benchmarks.{name}").run(quick=quick, out=typer.echo)
            typer.echo(compiled.summary())  # the figures depend on it (kmock.compiled)
            progress.advance(task)


@app.command()
def profiles():
    """List the kernel profiles kmock can emulate."""
    from . import profiles as p

    for name in p.names():
        if name == "host":
            desc = "probed from the real /dev/kvm" + ("" if os.path.exists("/dev/kvm") else
                                                       " (no /dev/kvm here)")
        else:
            desc = p.get(name).description
        typer.echo(f"{name:<22} {desc}")


# --- dump ------------------------------------------------------------------------------------


@app.command()
def dump(
    snapshot: Optional[pathlib.Path] = typer.Argument(
        None, help="A snapshot file (JSON, kmock.snapshot format 2), e.g. from --kmock-dump."),
    json_: bool = typer.Option(False, "--json", help="Print the snapshot as JSON (for machines)."),
    svg: Optional[pathlib.Path] = typer.Option(None, "--svg", metavar="FILE",
                                               help="Write the picture as SVG."),
    png: Optional[pathlib.Path] = typer.Option(None, "--png", metavar="FILE",
                                               help="Write the picture as PNG."),
    live: Optional[str] = typer.Option(
        None, "--live", metavar="SOCKET",
        help="Ask a running kmock server (kmock serve) for its state instead of a file."),
    max_runs: int = typer.Option(12, "--max-runs", help="Runs shown per row of a table."),
):
    """Show a kmock snapshot: tables per object, JSON, or a picture of each guest_memfd.

    From inside a test, kmock.dump.live(kernel) prints the same tables for a running
    mock kernel.
    """
    import json

    from . import dump as d

    if (snapshot is None) == (live is None):
        _fail("give a snapshot file or --live SOCKET (one of the two)")
    try:
        snap = d.fetch_live(live) if live is not None else d.load(snapshot)
    except (d.SnapshotError, d.LiveUnavailable) as e:
        _fail(str(e))
    if json_:
        typer.echo(json.dumps(snap, indent=1, sort_keys=True))
    else:
        d.render(snap, _console(), max_runs=max_runs)
    try:
        for path in d.write_outputs(snap, svg=svg, png=png):
            typer.echo(f"picture written to {path}", err=json_)
    except OSError as e:
        _fail(f"cannot write the picture: {e.strerror}")


# --- replay ----------------------------------------------------------------------------------


@app.command()
def replay(
    trace: pathlib.Path = typer.Argument(..., help="A trace file written by Kernel(trace=...) "
                                                  "or HostKernel(trace=...)."),
    profile: Optional[str] = typer.Option(
        None, "--profile", "-p",
        help="The mock's profile (default: host for a trace of the real kernel, else the "
             "trace's own)."),
):
    """Re-execute a syscall trace on a fresh mock and report the first divergence
    (call index, expected, got). Exits 1 on a divergence."""
    from . import replay as r
    from .errors import KmockUsageError

    try:
        with _progress() as progress:
            task = progress.add_task("replay", total=None)

            def tick(i, total):
                progress.update(task, completed=i, total=total)

            n, div = r.replay(trace, profile=profile, on_call=tick)
    except FileNotFoundError:
        _fail(f"no such trace file: {trace}")
    except (ValueError, KmockUsageError) as e:
        _fail(str(e))
    if div is None:
        typer.echo(f"replayed {n} calls: no divergence")
        return
    typer.echo(f"replayed {n} calls before the first divergence")
    typer.echo(str(div))
    raise typer.Exit(1)


# --- sweep -----------------------------------------------------------------------------------


@app.command()
def sweep(
    scenario: List[str] = typer.Argument(None, help="Scenario names (default: all of the platform)."),
    platform: str = typer.Option("none", "--platform", help="none | tdx | snp | cca"),
    list_: bool = typer.Option(False, "--list", help="List the scenarios and exit."),
):
    """The fail-nth sweep: run each VMM scenario, then re-run it failing each failure
    point in turn; check the errno, the invariants, leaks and that a failed call changed
    nothing. Where the kernel itself keeps a change or records a consequence (declared by
    the platform's plugin), the outcome reads partial or expected, not a problem. Exits 1
    on any problem."""
    from rich.table import Table

    from .testing import fail_nth

    known = fail_nth.scenarios(platform)
    if list_:
        for name in known:
            typer.echo(name)
        return
    if not known:
        _fail(f"no fail-nth scenarios for platform {platform!r} (they come with the "
              f"kmock_{platform} plugin)")
    unknown = [s for s in scenario or () if s not in known]
    if unknown:
        _fail(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(known)}")
    console = _console()
    problems = []
    declared = 0
    used = set()
    table = Table(title=f"fail-nth sweep (platform {platform})", title_justify="left")
    for col in ("scenario", "n", "failure point", "errno", "failed call", "outcome", "ok"):
        table.add_column(col)
    with _progress(console) as progress:
        for name in scenario or list(known):
            fn, make = known[name]
            task = progress.add_task(f"sweep {name}", total=None)
            result = fail_nth.sweep(
                fn, make, on_run=lambda i, t, run, task=task: progress.update(
                    task, completed=i, total=t))
            progress.remove_task(task)
            for run in result.runs:
                table.add_row(name, str(run.n), run.point, os.strerror(run.errno or 0)
                              if run.errno else "-", run.call or "-", _short_outcome(run),
                              "yes" if not run.problems else "[red]NO[/red]")
            problems += [f"{name}: {p}" for p in result.problems]
            declared += sum(1 for run in result.runs if run.expected)
            used |= result.used
    console.print(table)
    if used:
        console.print("What the kernel itself does (declared by the platform's plugin):")
        for d in sorted(used, key=lambda d: (d.kind, d.point, d.call or "")):
            console.print(f"  {d.kind} {d.point}" + (f" in {d.call}" if d.call else "")
                          + f": {d.reason}", markup=False, highlight=False)
    for p in problems:
        console.print(f"[red]{p}[/red]")
    console.print(f"fail-nth: {len(problems)} problem(s); {declared} run(s) with an outcome "
                  f"the kernel itself produces (partial, expected)")
    if problems:
        raise typer.Exit(1)


def _short_outcome(run):
    """The table's outcome: the reasons of declared outcomes are listed below it."""
    if run.violations and any(d.violations for d in run.expected):
        return f"expected ({', '.join(run.violations)})"
    return "partial" if run.expected else run.outcome


# --- demo ------------------------------------------------------------------------------------


def _demo_runner(platform):
    """The demo's run(out, platform, trace) -> (kernel, story): examples/vmm_demo.py for
    platform none, else what the platform's plugin offers under the kmock.demos group."""
    if platform == "none":
        path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "vmm_demo.py"
        if not path.exists():
            _fail(f"the demo VMM {path} is not here: kmock demo runs from a source checkout "
                  "(pip install -e .)")
        spec = importlib.util.spec_from_file_location("kmock_vmm_demo", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod.run
    from importlib.metadata import entry_points

    for ep in entry_points(group=DEMO_GROUP):
        if ep.name == platform:
            return ep.load()
    from .kernel import Kernel

    k = Kernel()
    declared = {p.name for part in k.pm.hook.kmock_platforms(kernel=k) for p in (part or ())}
    k.close_all()
    if platform not in declared:  # of any architecture
        _fail(f"platform {platform!r} needs the kmock_{platform} architecture plugin, which "
              f"is not installed here. Install it (it registers under the 'kmock.plugins' "
              f"entry points), or run kmock demo --platform none.")
    _fail(f"the kmock_{platform} plugin is installed but offers no demo (an entry point "
          f"'{platform}' in the '{DEMO_GROUP}' group, a function like examples/vmm_demo.py's "
          f"run)")


@app.command()
def demo(
    platform: str = typer.Option("none", "--platform", help="none | tdx | snp | cca"),
    svg: Optional[pathlib.Path] = typer.Option(
        pathlib.Path("kmock-demo.svg"), "--svg", metavar="FILE", help="Where to write the picture."),
    png: Optional[pathlib.Path] = typer.Option(None, "--png", metavar="FILE",
                                               help="Also write the picture as PNG."),
    json_path: Optional[pathlib.Path] = typer.Option(None, "--json", metavar="FILE",
                                                     help="Also write the snapshot as JSON."),
    trace: Optional[pathlib.Path] = typer.Option(None, "--trace", metavar="FILE",
                                                 help="Record the VMM's syscalls as a trace."),
):
    """Boot a scripted guest under a small VMM on the mock (no /dev/kvm needed): it
    converts memory, maps it for a device, and one thing goes wrong. Prints what
    happened and the dump, and writes the picture."""
    from . import dump as d
    from . import snapshot as snapmod

    run = _demo_runner(platform)
    console = _console()
    console.rule(f"kmock demo (platform {platform})")
    import io

    # always traced: the dump then shows the VMM's last syscalls
    kernel, _ = run(out=console.print, platform=platform,
                    trace=str(trace) if trace else io.StringIO())
    try:
        snap = snapmod.capture(kernel)
        console.rule("the dump")
        d.render(snap, console)
        for path in d.write_outputs(snap, svg=svg, png=png, json_path=json_path):
            console.print(f"written: {path}")
    finally:
        kernel.close_all()
        if trace is not None:
            kernel.trace.close()
            console.print(f"trace written: {trace} (replay it: kmock replay {trace})")


from .preload.cli import register as _register_preload  # noqa: E402 (kmock serve, kmock run)

_register_preload(app)


def main():
    sys.exit(app())


if __name__ == "__main__":
    main()
