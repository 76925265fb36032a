"""docs/capabilities.md tells VMM developers which capability's ioctls answer ENOTTY on kmock.

The table must stay true as ioctls are added: a row whose kmock column says "not
implemented" names ioctls that are absent from every dispatch table (so the VMM gets
ENOTTY, as the doc promises), and every ioctl kmock dispatches that a row names is in a row
that says it is implemented.
"""

import os
import pathlib
import re

import pytest

import kmock
from kmock.uapi import arm64, kvm, x86

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "capabilities.md"
#: ioctls that carry many capabilities (a row about one capability names them without
#: meaning the whole ioctl)
MULTIPLEXERS = {"KVM_ENABLE_CAP", "KVM_CHECK_EXTENSION"}


def _rows():
    """(capability, promises, kmock column) of each row of the table."""
    out = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].isdigit():
            out.append((cells[1], cells[4], cells[5]))
    return out


def _ioctl_numbers():
    names = {}
    for mod in (kvm, x86, arm64):
        for n in dir(mod):
            v = getattr(mod, n)
            if n.startswith("KVM_") and isinstance(v, int):
                names.setdefault(n, v)
    return names


def _dispatched(profile):
    """Every request number in the tables a DEFAULT VM's files dispatch on ``profile``."""
    k = kmock.Kernel(profile)
    try:
        fd = k.open("/dev/kvm", os.O_RDWR)
        vm = k.vm(k.ioctl(fd, kvm.KVM_CREATE_VM, 0))
        reqs = set()
        for ft in ("kvm", "vm", "vcpu", "gmem"):
            reqs |= set(k.ioctl_table(ft))
        for table in vm.ioctl_tables.values():
            reqs |= set(table)
        return reqs
    finally:
        k.close_all()


def _names(text, numbers):
    """The ioctl names a cell mentions ("KVM_HAS/GET/SET_DEVICE_ATTR" names all three)."""
    out = set(re.findall(r"KVM_[A-Z0-9_]+", text))
    for m in re.finditer(r"KVM_((?:[A-Z0-9]+/)+)([A-Z0-9]+)_([A-Z0-9_]+)", text):
        for verb in m.group(1).split("/")[:-1] + [m.group(2)]:
            out.add(f"KVM_{verb}_{m.group(3)}")
    return {n for n in out if n in numbers and n not in MULTIPLEXERS}


def test_the_table_is_read():
    rows = _rows()
    assert len(rows) > 100  # one row per KVM_CAP_* number up to 6.18's
    assert any(k.startswith("not implemented") for _c, _p, k in rows)


@pytest.mark.parametrize("profile", ["linux-6.18", "host"])
def test_not_implemented_rows_name_no_dispatched_ioctl(profile):
    """A row that says "not implemented" must not name an ioctl kmock answers."""
    if profile == "host" and not os.path.exists("/dev/kvm"):
        pytest.skip("profile host needs /dev/kvm to probe")
    numbers = _ioctl_numbers()
    have = _dispatched(profile)
    stale = []
    for cap, promises, col in _rows():
        if not col.startswith("not implemented"):
            continue
        for name in sorted(_names(promises, numbers)):
            if numbers[name] in have:
                stale.append(f"{cap}: {name}")
    assert stale == [], "rows say 'not implemented' but kmock dispatches these: " + ", ".join(stale)


def test_the_618_column_is_the_linux_618_profile():
    """The '6.18' column says what KVM_CHECK_EXTENSION on /dev/kvm answers with the
    linux-6.18 profile ('-' is 0)."""
    k = kmock.Kernel("linux-6.18")
    try:
        fd = k.open("/dev/kvm", os.O_RDWR)
        wrong = []
        for line in DOC.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 6 and cells[0].isdigit():
                want = 0 if cells[3] == "-" else int(cells[3])
                have = k.ioctl(fd, kvm.KVM_CHECK_EXTENSION, int(cells[0]))
                if have != want:
                    wrong.append(f"{cells[0]} {cells[1]}: doc {cells[3]}, profile {have}")
        assert wrong == []
    finally:
        k.close_all()
