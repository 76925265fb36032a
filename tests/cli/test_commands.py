"""The kmock commands through typer's CliRunner: demo, dump, replay, sweep and comfort."""

import json
import os
import re
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

import kmock
from kmock.cli import app
from kmock.uapi import kvm as K

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, list(args), env={"COLUMNS": "160"})


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and re.match(r"kmock \S+", r.output)


def test_help_has_no_raw_backticks():
    commands = ["demo", "dump", "replay", "sweep", "conform", "bench", "profiles"]
    for cmd in [None] + commands:
        r = invoke(*([cmd] if cmd else []), "--help")
        assert r.exit_code == 0, (cmd, r.output)
        assert "`" not in r.output, cmd
        if cmd is None:
            assert all(c in r.output for c in commands)


def test_conform_list_and_unknown_scenario():
    from kmock.testing.conformance import SCENARIOS

    r = invoke("conform", "--list")
    assert r.exit_code == 0
    assert r.output.split()[0] == next(iter(SCENARIOS))
    assert len(r.output.strip().splitlines()) == len(SCENARIOS)
    r = invoke("conform", "--scenario", "no_such_scenario")
    assert r.exit_code == 2
    assert "unknown conformance scenario" in r.output and "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)


def test_demo_needs_no_kvm_prints_the_story_and_writes_the_picture(tmp_path):
    svg, png, js, tr = (tmp_path / n for n in ("d.svg", "d.png", "d.json", "d.jsonl"))
    r = invoke("demo", "--svg", str(svg), "--png", str(png), "--json", str(js), "--trace", str(tr))
    assert r.exit_code == 0, r.output
    out = r.output
    assert "MAP_GPA_RANGE" in out and "HLT" in out            # what happened
    assert "stale_iommu_dma" in out and "the IOMMU still maps private memory" in out
    assert "VMs and memslots" in out and "guest_memfd 0" in out  # the dump
    assert ET.parse(svg).getroot().tag.endswith("svg")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads(js.read_text())["version"] == 2
    assert "kmock replay" in out and tr.exists()


def test_demo_default_picture_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("demo")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "kmock-demo.svg").exists()


def test_demo_platform_without_its_plugin_is_a_clear_message():
    """A platform no installed plugin declares (the tdx, snp and cca plugins ship with kmock)."""
    platform = "z80"
    r = invoke("demo", "--platform", platform)
    assert r.exit_code == 2
    assert f"kmock_{platform}" in r.output and "--platform none" in r.output
    assert "Traceback" not in r.output


def test_demo_platform_whose_plugin_offers_no_demo_says_so(monkeypatch):
    """A platform some installed plugin declares, with nothing under kmock.demos."""
    import importlib.metadata

    from kmock.cli import DEMO_GROUP

    real = importlib.metadata.entry_points

    def without_demos(**kw):
        return [] if kw.get("group") == DEMO_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", without_demos)
    r = invoke("demo", "--platform", "tdx")
    assert r.exit_code == 2 and "offers no demo" in r.output and "kmock.demos" in r.output


def _snapshot_file(tmp_path):
    js = tmp_path / "s.json"
    assert invoke("demo", "--svg", str(tmp_path / "x.svg"), "--json", str(js)).exit_code == 0
    return js


def test_dump_tables_json_and_pictures(tmp_path):
    js = _snapshot_file(tmp_path)
    r = invoke("dump", str(js))
    assert r.exit_code == 0, r.output
    for title in ("VMs and memslots", "guest_memfd 0", "iommufd: IOAS areas and domains",
                  "violations", "last syscalls"):
        assert title in r.output
    r = invoke("dump", str(js), "--json")
    assert r.exit_code == 0 and json.loads(r.output)["version"] == 2
    svg, png = tmp_path / "p.svg", tmp_path / "p.png"
    r = invoke("dump", str(js), "--svg", str(svg), "--png", str(png))
    assert r.exit_code == 0
    ids = {el.get("id") for el in ET.parse(svg).getroot().iter()}
    assert {"band-private-0", "band-iommu-private-0"} <= ids
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_dump_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    for args, text in (([str(bad)], "not a kmock snapshot"),
                       ([str(tmp_path / "missing.json")], "cannot read"),
                       ([], "give a snapshot file"),
                       (["--live", str(tmp_path / "sock")], "kmock.dump.live")):
        r = invoke("dump", *args)
        assert r.exit_code == 2 and text in r.output and "Traceback" not in r.output
    old = tmp_path / "v1.json"
    old.write_text(json.dumps({"version": 1, "guest_memfds": []}))
    r = invoke("dump", str(old))
    assert r.exit_code == 2 and "format 1" in r.output


def test_dump_live_from_inside_a_test(tmp_path):
    from rich.console import Console

    from kmock import dump

    console = Console(record=True, width=140)
    with kmock.Kernel() as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=1 << 20))
        snap = dump.live(k, console=console, svg=tmp_path / "live.svg")
    text = console.export_text()
    assert "guest_memfd 0" in text and snap["guest_memfds"][0]["size"] == 1 << 20
    assert (tmp_path / "live.svg").exists()


def test_replay_command(tmp_path):
    path = tmp_path / "t.jsonl"
    with kmock.Kernel(trace=str(path)) as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    r = invoke("replay", str(path))
    assert r.exit_code == 0 and "no divergence" in r.output
    lines = path.read_text().splitlines()
    rec = json.loads(lines[2])
    rec.update(result=None, errno=12, errname="ENOMEM")
    del rec["result"]
    lines[2] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    r = invoke("replay", str(path), "--profile", "linux-6.18")
    assert r.exit_code == 1
    assert "first divergence at call 1" in r.output and "error ENOMEM" in r.output
    r = invoke("replay", str(tmp_path / "nope.jsonl"))
    assert r.exit_code == 2 and "no such trace file" in r.output


def test_sweep_command():
    r = invoke("sweep", "--list")
    assert r.exit_code == 0 and set(r.output.split()) == {"launch", "conversion", "map_file", "dma"}
    r = invoke("sweep", "conversion")
    assert r.exit_code == 0, r.output
    assert "gmem.refcount" in r.output and "fail-nth: 0 problem(s)" in r.output
    r = invoke("sweep", "nonsense")
    assert r.exit_code == 2 and "unknown scenario" in r.output
    r = invoke("sweep", "--platform", "z80")  # no installed plugin declares it
    assert r.exit_code == 2 and "kmock_z80" in r.output


@pytest.mark.parametrize("platform", ["tdx", "snp"])
def test_sweep_command_platform(platform):
    """Every scenario of the platform: what the kernel itself does when a step fails is an
    expected outcome (declared by the plugin), not a problem."""
    r = invoke("sweep", "--platform", platform)
    assert r.exit_code == 0, r.output
    assert "fail-nth: 0 problem(s)" in r.output
    assert "NO" not in r.output.split()
    declared = int(r.output.split("problem(s); ")[1].split()[0])
    assert declared > 0 and "partial" in r.output and "expected" in r.output


def test_bench_still_runs_with_a_progress_bar():
    r = invoke("bench", "core", "--quick")
    assert r.exit_code == 0, r.output
    assert "W1" in r.output


def test_dump_live_reads_a_running_server(tmp_path):
    """kmock dump --live SOCKET asks a kmock server (kmock serve / kmock run) for its state."""
    import os

    import kmock
    from kmock import preload
    from kmock.uapi import kvm as K

    k = kmock.Kernel("gmem-attributes-v8")
    vm = k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
    k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=1 << 20))
    server = preload.serve(k, str(tmp_path / "sock"))
    try:
        result = runner.invoke(app, ["dump", "--live", server.path, "--json"])
        assert result.exit_code == 0, result.output
        snap = json.loads(result.output)
        assert snap["version"] == 2 and len(snap["guest_memfds"]) == 1
    finally:
        server.stop()
        k.close_all()
