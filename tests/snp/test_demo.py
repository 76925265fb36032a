"""``kmock demo --platform snp`` (kmock_snp.demo.run) and the RMP table of its dump."""

import importlib.metadata
import io
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from kmock import dump as d
from kmock import snapshot as snapmod
from kmock_snp import demo


def _run():
    lines = []
    kernel, story = demo.run(out=lines.append, platform="snp", trace=io.StringIO())
    return kernel, story, lines


def test_demo_story_launch_conversion_and_the_rmp_fault():
    kernel, story, lines = _run()
    try:
        assert story == lines
        text = "\n".join(story)
        assert "SNP_LAUNCH_FINISH" in text and "MAP_GPA_RANGE" in text and "HLT" in text
        assert "RMP_FAULT (0xd)" in text  # the AMD IOMMU blocked the DMA
        kinds = [v.kind for v in kernel.violations]
        assert kinds == ["dma_blocked"]
    finally:
        kernel.close_all()


def test_demo_dump_lists_the_rmp_table_and_draws_it(tmp_path):
    kernel, _, _ = _run()
    try:
        snap = snapmod.capture(kernel)
    finally:
        kernel.close_all()
    tables = snap["arch"]["snp"]["tables"]
    rmp = [t for t in tables if t["name"] == "RMP"]
    assert len(rmp) == 1 and rmp[0]["space"] == "pfn"
    states = {st for _, _, st in rmp[0]["runs"]}
    # the measured image (validated at launch), the page the guest validated, the VMSA
    assert {"guest+v", "vmsa"} <= states
    assert all(st in rmp[0]["legend"] for st in states)
    console = Console(file=io.StringIO(), width=200)
    d.render(snap, console)
    out = console.file.getvalue()
    assert "architecture: snp" in out and "guest+v" in out and "vmsa" in out
    svg = tmp_path / "snp.svg"
    d.write_outputs(snap, svg=svg)
    assert ET.parse(svg).getroot().tag.endswith("svg")


def test_rmp_table_states_follow_the_entries():
    """A leaked frame shows as leaked; an unassigned one is a gap."""
    from kmock_snp import rmp_state
    from kmock_snp.rmp import Rmp

    r = Rmp(1 << 20)
    assert r.rmp_make_private(16, 1 << 32, 0, 1, True) == 0
    assert rmp_state(r.entry(16)) == "pre-guest"
    r.snp_leak_pages(16, 1)
    assert rmp_state(r.entry(16)) == "leaked"
    assert rmp_state(r.entry(17)) == ""


def _installed():
    return any(ep.name == "snp" for ep in importlib.metadata.entry_points(group="kmock.demos"))


@pytest.mark.skipif(not _installed(), reason="the kmock.demos entry point is not installed yet")
def test_cli_demo_platform_snp(tmp_path):
    from typer.testing import CliRunner

    from kmock.cli import app

    svg = tmp_path / "d.svg"
    r = CliRunner().invoke(app, ["demo", "--platform", "snp", "--svg", str(svg)])
    assert r.exit_code == 0, r.output
    assert "RMP_FAULT" in r.output and "SNP_LAUNCH_FINISH" in r.output
    assert "RMP" in r.output
    assert ET.parse(svg).getroot().tag.endswith("svg")
