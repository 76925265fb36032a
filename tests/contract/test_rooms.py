"""The rooms meet only through public interfaces: kvm/ and iommufd/ never import each
other (they meet through kmock.notifier and guest_memfd's public queries)."""

import ast
import pathlib

import kmock

ROOT = pathlib.Path(kmock.__file__).parent


def imports_of(package):
    """Every kmock module a package's files import (absolute names)."""
    out = set()
    for path in (ROOT / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    out.add(node.module or "")
                else:
                    base = ["kmock", package][: 3 - node.level]
                    out.add(".".join(base + ([node.module] if node.module else [])))
                    for alias in node.names:
                        out.add(".".join(base + [node.module or alias.name]))
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
    return out


def test_kvm_does_not_import_iommufd():
    assert not [m for m in imports_of("kvm") if m.startswith("kmock.iommufd")]


def test_iommufd_does_not_import_kvm():
    assert not [m for m in imports_of("iommufd") if m.startswith("kmock.kvm")]


def test_the_check_sees_relative_imports():
    """The checker itself: a relative import of a sibling package is seen."""
    found = imports_of("iommufd")
    assert "kmock.notifier" in found and "kmock.errors" in found
