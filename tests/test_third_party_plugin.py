"""A third-party plugin, installed as a user installs one: examples/kmock_pkvm.

The example (written by following docs/writing-a-plugin.md) is installed into a
temporary site directory with a .dist-info whose entry_points.txt comes from the
example's own pyproject.toml; ``kmock.Kernel()`` then finds it through the
``kmock.plugins`` entry-point group without being told about it. Its own tests run
in a subprocess against that installed copy. The guide's code blocks are checked to
be literal excerpts of the example's files.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import kmock
from kmock.uapi import kvm as K

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "kmock_pkvm"
GUIDE = ROOT / "docs" / "writing-a-plugin.md"


def install(site):
    """What ``pip install --target site examples/kmock_pkvm`` leaves behind."""
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    shutil.copytree(EXAMPLE / "kmock_pkvm", site / "kmock_pkvm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"{meta['name'].replace('-', '_')}-{meta['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\n"
                                   f"Version: {meta['version']}\n")
    eps = "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in items.items())
                  for group, items in meta["entry-points"].items())
    (info / "entry_points.txt").write_text(eps)
    return site


@pytest.fixture
def site(tmp_path, monkeypatch):
    path = install(tmp_path / "site")
    for name in [m for m in sys.modules if m == "kmock_pkvm" or m.startswith("kmock_pkvm.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(path))
    yield path
    for name in [m for m in sys.modules if m == "kmock_pkvm" or m.startswith("kmock_pkvm.")]:
        sys.modules.pop(name)


def test_found_through_its_entry_point(site):
    assert {ep.name: ep.value for ep in entry_points(group="kmock.plugins")}["pkvm"] == \
        "kmock_pkvm"
    with kmock.Kernel("linux-arm64-pkvm") as k:  # no plugins= : the entry point is enough
        plugin = k.pm.get_plugin("pkvm")
        assert Path(plugin.__file__).is_relative_to(site)
        assert k.profile.arch == "arm64" and k.platform.name == "pkvm"
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, plugin.uapi.KVM_VM_TYPE_ARM_PROTECTED | 40)
        gmem = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(
            size=4096, flags=K.GUEST_MEMFD_FLAG_MMAP))
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 31, memory_size=4096,
            guest_memfd=gmem))
        vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
        init = plugin.uapi.kvm_vcpu_init(target=plugin.uapi.KVM_ARM_TARGET_GENERIC_V8)
        k.ioctl(vcpu, plugin.uapi.KVM_ARM_VCPU_INIT, init)
        share = k.vm(vm).vcpus[0].guest.pkvm.mem_share(1 << 31)
        assert k.ioctl(vcpu, K.KVM_RUN, 0) == 0
        assert k.vm(vm).vcpus[0].run.hypercall.nr == \
            plugin.uapi.ARM_SMCCC_VENDOR_HYP_KVM_MEM_SHARE_FUNC_ID and not share.done
    with kmock.Kernel() as k:  # installed but not active: linux-6.18 is an x86 profile
        assert k.pm.get_plugin("pkvm") is not None
        assert all(t.arch == "x86" for t in k.vm_types.values())


def test_without_the_entry_point_the_profile_is_unknown():
    if any(ep.name == "pkvm" for ep in entry_points(group="kmock.plugins")):
        pytest.skip("kmock-pkvm is installed in this environment")
    with pytest.raises(kmock.errors.KmockUsageError, match="linux-arm64-pkvm"):
        kmock.Kernel("linux-arm64-pkvm")


def test_the_examples_own_tests_pass_installed(site, tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the example's pythonpath = .
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]))
    env.pop("PYTEST_XDIST_WORKER", None)
    opts = ["-p", "no:cacheprovider", "-p", "no:xdist"]
    if importlib.util.find_spec("kmock.testing.pytest_plugin") is None:
        opts += ["-p", "no:kmock"]  # an installed kmock's pytest11 entry point, absent here
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *opts,
         "-c", str(tmp_path / "pytest.ini"), str(EXAMPLE / "tests")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", r.stdout)


def test_guide_snippets_are_the_examples_code():
    """Every ```python / ```toml block of the guide that follows a `<!-- from: path#name -->`
    line is the text between ``[guide:name]`` and ``[/guide:name]`` in that file; every
    other code block is one of the allowed shell lines."""
    text = GUIDE.read_text()
    blocks = re.findall(r"(<!-- from: (\S+?)#(\S+?) -->\n)?```(\w*)\n(.*?)```", text, re.S)
    assert len(blocks) >= 10
    for marker, path, name, lang, body in blocks:
        if not marker:
            assert lang in ("", "text", "console"), body[:80]
            continue
        src = (ROOT / path).read_text()
        m = re.search(rf"[ \t]*# \[guide:{re.escape(name)}\]\n(.*?)[ \t]*# \[/guide:{re.escape(name)}\]",
                      src, re.S)
        assert m, f"{path} has no [guide:{name}] block"
        want = _dedent(m.group(1))
        assert body == want, f"guide block {path}#{name} differs from the file"


def _dedent(s):
    import textwrap

    return textwrap.dedent(s)
