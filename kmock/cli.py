"""The ``kmock`` command line (typer)."""

import os
import sys

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="kmock: a mock of the Linux KVM, guest_memfd and iommufd APIs for testing VMMs.",
)


@app.command()
def conform(
    scenario: list[str] = typer.Option(None, "--scenario", "-s", help="run only these scenarios"),
):
    """Run every conformance scenario on the real /dev/kvm and on the mock; compare.

    Prints a table (scenario, host, mock, match) and a last line
    ``conformance: N/M scenarios match``. Exits non-zero on any mismatch, and when
    there is no /dev/kvm to compare against.
    """
    from .testing.conformance import conform as run

    matched, total = run(out=typer.echo, names=scenario or None)
    if total == 0 or matched != total:
        raise typer.Exit(1)


BENCH_SUITES = {
    "core": "compiled memory core vs pure-Python twin",
    "syscalls": "mock (profile host) vs real kernel",
    "conversion": "guest_memfd conversions vs real 4K fallocate; 4 TiB scale",
    "iommufd": "MAP_FILE/UNMAP and DMA vs real 4K fallocate",
    "patching": "os/fcntl calls while kmock.patched is active vs unpatched; patched ioctl vs Kernel.ioctl",
}


@app.command()
def bench(
    suite: str = typer.Argument("all", help="core | syscalls | conversion | iommufd | patching | all"),
    quick: bool = typer.Option(False, "--quick", help="small workloads (a smoke run)"),
):
    """Benchmarks: the compiled core against its pure twin, and the mock against the real
    kernel. Timings are reported, never asserted."""
    import importlib

    if suite != "all" and suite not in BENCH_SUITES:
        raise typer.BadParameter(f"suite must be one of {', '.join(BENCH_SUITES)} or all")
    for name, what in BENCH_SUITES.items():
        if suite in ("all", name):
            typer.echo(f"== kmock bench {name}: {what} ==")
            importlib.import_module(f"kmock.benchmarks.{name}").run(quick=quick, out=typer.echo)


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


def main():
    sys.exit(app())


if __name__ == "__main__":
    main()
