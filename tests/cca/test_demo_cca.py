"""Issue 13 for CCA: ``kmock demo --platform cca`` (kmock_cca.demo.run through the
``kmock.demos`` entry point) and the dump of the demo."""

import xml.etree.ElementTree as ET
from importlib.metadata import entry_points

import pytest
from typer.testing import CliRunner

from kmock import cli
from kmock import snapshot as snapmod
from kmock_cca import demo

runner = CliRunner()


def _check_story(out):
    assert "KVM_ARM_RMI_POPULATE" in out and "RSI_IPA_STATE_SET(EMPTY)" in out
    assert "KVM_EXIT_MEMORY_FAULT" in out and "IOMMU_IOAS_MAP_FILE" in out
    assert "read back b'from the device'" in out
    assert "DMA fault" in out and "SMMU granule protection" in out
    assert "dma_blocked" in out


def test_demo_story_and_its_dump_has_the_cca_tables():
    k, story = demo.run(out=lambda line: None)
    try:
        _check_story("\n".join(story))
        assert [v.kind for v in k.violations] == ["dma_blocked"]
        tables = {t["name"]: t for t in snapmod.capture(k)["arch"]["cca"]["tables"]}
        states = {st for _s, _e, st in tables["granules (Realm PAS)"]["runs"]}
        assert {"DATA", "RD", "REC", "RTT"} <= states
        rtt = {st for _s, _e, st in tables["RTT"]["runs"]}
        assert {"ASSIGNED/RAM", "UNASSIGNED/RAM"} <= rtt
    finally:
        k.close_all()


def _invoke_demo(tmp_path):
    svg = tmp_path / "cca.svg"
    r = runner.invoke(cli.app, ["demo", "--platform", "cca", "--svg", str(svg)],
                      env={"COLUMNS": "160"})
    assert r.exit_code == 0, r.output
    _check_story(r.output)
    assert "architecture: cca" in r.output and "granules (Realm PAS)" in r.output  # the dump
    assert ET.parse(svg).getroot().tag.endswith("svg")
    drawn = svg.read_text()
    assert "RTT" in drawn and "granules (Realm PAS)" in drawn and "ASSIGNED/RAM" in drawn
    return r


def test_cli_demo_with_the_cca_runner(tmp_path, monkeypatch):
    """The CLI path with kmock_cca.demo.run as the platform's runner (before the entry
    point is installed)."""
    monkeypatch.setattr(cli, "_demo_runner", lambda platform: demo.run)
    _invoke_demo(tmp_path)


@pytest.mark.skipif(not any(ep.name == "cca" and ep.value == "kmock_cca.demo:run"
                            for ep in entry_points(group=cli.DEMO_GROUP)),
                    reason="the kmock.demos entry point of kmock_cca is not installed")
def test_cli_demo_platform_cca_through_the_entry_point(tmp_path):
    _invoke_demo(tmp_path)


@pytest.mark.skipif(not any(ep.name == "cca" for ep in entry_points(group="kmock.fail_nth")),
                    reason="the kmock.fail_nth entry point of kmock_cca is not installed")
def test_sweep_scenarios_found_through_the_entry_point():
    from kmock.testing import fail_nth

    assert {"launch", "conversion", "map_file", "dma"} <= set(fail_nth.scenarios("cca"))


def test_cli_sweep_platform_cca(monkeypatch):
    """``kmock sweep --platform cca map_file`` with the scenarios registered as the entry
    point would: exit 0, the cca failure points listed, the kept progress shown."""
    from kmock.testing import fail_nth
    from kmock_cca import scenarios

    monkeypatch.setattr(fail_nth, "SCENARIOS", dict(fail_nth.SCENARIOS))
    for name, (fn, make) in scenarios.scenarios().items():
        fail_nth.register("cca", name, fn, make)
    r = runner.invoke(cli.app, ["sweep", "--platform", "cca", "map_file"],
                      env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "cca.rmi.data_create" in r.output and "partial" in r.output
    assert "fail-nth: 0 problem(s)" in r.output
