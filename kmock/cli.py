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


@app.command()
def bench(
    suite: str = typer.Argument("all", help="core | syscalls | all"),
    quick: bool = typer.Option(False, "--quick", help="small workloads (a smoke run)"),
):
    """Benchmarks: the compiled core against its pure twin (core); the mock against the
    real kernel (syscalls)."""
    if suite not in ("core", "syscalls", "all"):
        raise typer.BadParameter("suite must be core, syscalls or all")
    if suite in ("core", "all"):
        from .benchmarks import core

        typer.echo("== kmock bench core: compiled memory core vs pure-Python twin ==")
        core.run(quick=quick, out=typer.echo)
    if suite in ("syscalls", "all"):
        from .benchmarks import syscalls

        typer.echo("== kmock bench syscalls: mock (profile host) vs real kernel ==")
        syscalls.run(quick=quick, out=typer.echo)


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
