"""``kmock demo --platform tdx`` (kmock_tdx.demo.run): the TD boots, converts, shares a
buffer with a device, and is killed after the VMM punches a hole over an accepted page;
the dump lists and draws the S-EPT table."""

import importlib.metadata
import xml.etree.ElementTree as ET

import pytest
from kmock_tdx import demo
from typer.testing import CliRunner

from kmock import cli
from kmock import snapshot as snapmod


def test_demo_story_and_the_td_is_killed():
    k, story = demo.run(out=lambda line: None)
    try:
        assert any("MapGPA" in line and "shared" in line for line in story)
        assert any("b'hello device'" in line for line in story)
        # the TD's HLT halts inside KVM_RUN: the VMM's signal ends the run, never an exit HLT
        assert any("EINTR (KVM_EXIT_INTR)" in line for line in story)
        assert not any("exit HLT" in line for line in story)
        assert any("KVM_RUN: EIO" in line for line in story)
        assert [v.kind for v in k.violations] == ["td_killed"]
        assert "fallocate(PUNCH_HOLE)" in str(k.violations[0])
        snap = snapmod.capture(k)
        (table,) = snap["arch"]["tdx"]["tables"]
        gfn = 1 << 20  # GPA 4 GiB
        # the firmware ADDed (MAPPED); page 6 re-AUGed by the guest's access: PENDING
        assert table["runs"] == [[gfn, gfn + 2, "MAPPED"], [gfn + 6, gfn + 7, "PENDING"]]
    finally:
        k.close_all()


def _check_cli(result, svg):
    assert result.exit_code == 0, result.output
    assert "TD launched" in result.output and "td_killed" in result.output
    assert "S-EPT" in result.output  # the dump lists the table
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    assert "S-EPT" in svg.read_text()  # and the picture draws it


def test_kmock_demo_cli_with_the_tdx_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_demo_runner", lambda platform: demo.run)
    svg = tmp_path / "demo.svg"
    r = CliRunner().invoke(cli.app, ["demo", "--platform", "tdx", "--svg", str(svg)])
    _check_cli(r, svg)


@pytest.mark.skipif(not any(ep.name == "tdx" for ep in
                            importlib.metadata.entry_points(group="kmock.demos")),
                    reason="the kmock.demos entry point tdx is not installed yet")
def test_kmock_demo_platform_tdx_entry_point(tmp_path):
    svg = tmp_path / "demo.svg"
    r = CliRunner().invoke(cli.app, ["demo", "--platform", "tdx", "--svg", str(svg)])
    _check_cli(r, svg)
