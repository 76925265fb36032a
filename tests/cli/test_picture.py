"""The picture: a valid SVG / PNG with the expected bands."""

import xml.etree.ElementTree as ET

from kmock import picture

from .test_snapshot_v2 import demo_snapshot


def _svg_ids(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg")
    return {el.get("id") for el in root.iter() if el.get("id")}


def test_svg_has_the_bands_overlays_and_violation_markers(tmp_path):
    snap, _ = demo_snapshot()
    path = tmp_path / "demo.svg"
    picture.save(snap, path)
    ids = _svg_ids(path)
    for band in ("attr-shared", "attr-private", "unallocated", "shared", "private", "memslots",
                 "host-mmap", "stage-2", "iommu", "iommu-private"):
        assert f"band-{band}-0" in ids, band
    assert "band-poisoned-0" not in ids and "band-pinned-0" not in ids  # none in this run
    assert {"violation-0-0", "violation-1-0"} <= ids


def test_small_runs_stay_visible_in_a_huge_file(tmp_path):
    snap = {"version": 2, "profile": "p", "platform": "none", "vms": [], "iommufd": [],
            "arch": {}, "violations": [], "dma_faults": [], "sigbus": [], "trace": [],
            "guest_memfds": [{
                "id": 0, "fds": [5], "vm": None, "size": 1 << 42, "flags": 0,
                "pfn_base": 1 << 18, "folio_pages": 1, "private": [[0, 1 << 30]],
                "allocated": [[7, 8]], "pinned": [[7, 8, 1]], "poisoned": [[9, 10]],
                "split_folios": [], "host_mappings": [], "bindings": [], "stage2": [],
                "iommu": []}]}
    fig = picture.figure(snap)
    ax = fig.axes[0]
    gids = {c.get_gid() for c in ax.collections}
    assert {"band-pinned-0", "band-poisoned-0", "band-private-0", "band-unallocated-0"} <= gids
    poisoned = next(c for c in ax.collections if c.get_gid() == "band-poisoned-0")
    x0, x1 = poisoned.get_paths()[0].get_extents().x0, poisoned.get_paths()[0].get_extents().x1
    assert x1 - x0 >= (1 << 30) * picture.MIN_WIDTH * 0.99  # one page, drawn wide enough
    assert x0 == 9  # at its place, to scale


def test_png_is_a_png_with_the_private_colour(tmp_path):
    from PIL import Image

    snap, _ = demo_snapshot()
    path = tmp_path / "demo.png"
    picture.save(snap, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(path).convert("RGB")
    want = tuple(int(picture.COLOURS["private"][i:i + 2], 16) for i in (1, 3, 5))
    colours = img.getcolors(maxcolors=1 << 20)
    assert any(c == want and n > 20 for n, c in colours)
