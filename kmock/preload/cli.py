"""``kmock serve`` and ``kmock run``: the native tier's commands.

kmock/cli.py registers them with ``register(app)``.
"""

import json
import sys
import threading

import typer

from .protocol import SPIN_US
from .server import MAX_SPIN_US


def _kernel(profile, platform, setting):
    from ..errors import KmockUsageError
    from ..kernel import Kernel

    settings = {}
    for s in setting or ():
        key, _, value = s.partition("=")
        try:
            settings[key] = json.loads(value)
        except ValueError:
            settings[key] = value
    if platform:
        settings["platform"] = platform
    try:
        return Kernel(profile, **settings)
    except KmockUsageError as e:
        raise typer.BadParameter(str(e)) from None


def _dump(snapshot, dump, out):
    text = json.dumps(snapshot, indent=2, default=repr, sort_keys=True)
    if dump:
        with open(dump, "w") as f:
            f.write(text + "\n")
    else:
        out(text)


def serve(
    socket_path: str = typer.Option(None, "--socket", help="Unix socket path (default: a new temporary one)"),
    profile: str = typer.Option("linux-6.18", "--profile", "-p", help="kernel profile"),
    platform: str = typer.Option(None, "--platform", help="confidential platform (none, tdx, snp, cca...)"),
    setting: list[str] = typer.Option(None, "--set", help="profile setting KEY=VALUE (JSON value)"),
    vfio: int = typer.Option(1, "--vfio", help="mock VFIO devices to create (/dev/vfio/devices/vfioN)"),
    trace: str = typer.Option(None, "--trace", help="log every request to this file"),
    spin_us: float = typer.Option(SPIN_US, "--spin-us", min=0, max=MAX_SPIN_US, help="how long each side of a connection spins for the other before it sleeps (0: never)"),
):
    """Serve a mock kernel to native programs. Prints the environment a client needs
    (LD_PRELOAD, KMOCK_SOCKET) and serves until interrupted; then prints the state."""
    from . import serve as start

    kernel = _kernel(profile, platform, setting)
    _add_vfio(kernel, vfio)
    tf = open(trace, "w") if trace else None
    srv = start(kernel, path=socket_path, trace=tf, spin_us=spin_us)
    for k, v in srv.env().items():
        typer.echo(f"export {k}={v}")
    sys.stdout.flush()
    try:
        forever = threading.Event()
        # a timed wait: a SIGINT that the kernel gives to one of the server's threads
        # interrupts no untimed wait of this one, and would be noticed only at its end
        while not forever.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        _dump(kernel.snapshot(), None, typer.echo)


def _add_vfio(kernel, n):
    if n and kernel.profile.iommufd:
        for _ in range(n):
            kernel.add_vfio_device()


def run(
    argv: list[str] = typer.Argument(..., help="the program and its arguments (after --)"),
    profile: str = typer.Option("linux-6.18", "--profile", "-p", help="kernel profile"),
    platform: str = typer.Option(None, "--platform", help="confidential platform (none, tdx, snp, cca...)"),
    setting: list[str] = typer.Option(None, "--set", help="profile setting KEY=VALUE (JSON value)"),
    vfio: int = typer.Option(1, "--vfio", help="mock VFIO devices to create (/dev/vfio/devices/vfioN)"),
    trace: str = typer.Option(None, "--trace", help="log every request to this file"),
    spin_us: float = typer.Option(SPIN_US, "--spin-us", min=0, max=MAX_SPIN_US, help="how long each side of a connection spins for the other before it sleeps (0: never)"),
    dump: str = typer.Option(None, "--dump", help="write the state at exit (JSON) to this file"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print no state at exit"),
):
    """Run PROGRAM under the preload library against a mock kernel; print or dump the
    mock's state when it exits. Exits with the program's status."""
    from . import run as run_program

    kernel = _kernel(profile, platform, setting)
    _add_vfio(kernel, vfio)
    tf = open(trace, "w") if trace else None
    try:
        res = run_program(list(argv), kernel=kernel, capture=False, trace=tf, spin_us=spin_us)
    except FileNotFoundError as e:
        typer.echo(f"kmock run: {e}", err=True)
        raise typer.Exit(127)
    finally:
        if tf:
            tf.close()
    snap = dict(res.snapshot)
    snap["server_errors"] = res.server.errors
    if dump or not quiet:
        if not dump:
            sys.stdout.flush()
            typer.echo("== kmock state at exit ==", err=True)
            _dump(snap, None, lambda t: typer.echo(t, err=True))
        else:
            _dump(snap, dump, typer.echo)
    raise typer.Exit(res.returncode if res.returncode >= 0 else 128 - res.returncode)


def register(app):
    """Add ``serve`` and ``run`` to the ``kmock`` typer app."""
    app.command(name="serve")(serve)
    app.command(name="run", context_settings={"allow_interspersed_args": False})(run)


def _standalone():
    app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)
    register(app)
    return app


if __name__ == "__main__":
    sys.exit(_standalone()())
