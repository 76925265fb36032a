"""Plugin mistakes are caught at Kernel() creation with a message naming the plugin
(kmock.pluginmanager), and Kernel() misuse names the argument."""


import pytest

import kmock
from kmock.errors import KmockUsageError, PluginError
from kmock.hookspecs import hookimpl
from kmock.kvm.vmtype import VmType


class Misspelt:
    @hookimpl
    def kmock_vm_typez(self, kernel):
        return []


class NoMarker:
    def kmock_vm_types(self, kernel):
        return []


class T7(VmType):
    type = 7
    name = "SEVEN"


class Dup:
    def __init__(self, name):
        self.name = name

    @hookimpl
    def kmock_vm_types(self, kernel):
        return [T7()]

    def __repr__(self):
        return f"<Dup {self.name}>"


class BadKey:
    @hookimpl
    def kmock_ioctls(self, kernel, file_type):
        return {"KVM_RUN": lambda f, a: 0} if file_type == "vm" else {}


class BadTypeTable(VmType):
    type = 8
    name = "EIGHT"

    def ioctls(self, kernel, file_type):
        return {1.5: lambda f, a: 0}


class DeclaresBadTable:
    @hookimpl
    def kmock_vm_types(self, kernel):
        return [BadTypeTable()]


def test_misspelt_hook_names_the_plugin():
    with pytest.raises(PluginError, match=r"kmock_vm_typez.*misspelt"):
        kmock.Kernel(plugins=[Misspelt()])


def test_missing_hookimpl_marker():
    with pytest.raises(PluginError, match="not marked with @kmock.hookspecs.hookimpl"):
        kmock.Kernel(plugins=[NoMarker()])


def test_duplicate_vm_type_names_both():
    with pytest.raises(PluginError, match=r"VM type 7 .* declared twice.*Dup (a|b)"):
        kmock.Kernel(plugins=[Dup("a"), Dup("b")])


def test_non_int_ioctl_keys():
    with pytest.raises(PluginError, match="'KVM_RUN' is not an int"):
        kmock.Kernel(plugins=[BadKey()])
    with pytest.raises(PluginError, match="VM type EIGHT.*1.5 is not an int"):
        kmock.Kernel(plugins=[DeclaresBadTable()])


def test_entry_point_that_fails_to_load_is_named(tmp_path, monkeypatch):
    dist = tmp_path / "broken_kmock_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-kmock-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[kmock.plugins]\nbroken = no_such_module_kmock\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PluginError, match=r"entry point 'broken' \(no_such_module_kmock\) failed"):
        kmock.Kernel()
    # only_plugins does not load entry points
    kmock.Kernel(only_plugins=[]).close_all()


def test_kernel_misuse_names_the_argument():
    with pytest.raises(KmockUsageError, match="unknown profile setting 'bogus'"):
        kmock.Kernel(bogus=1)
    with pytest.raises(KmockUsageError, match="unknown kmock profile 'nope'"):
        kmock.Kernel("nope")
    with pytest.raises(KmockUsageError, match="platform 'tdx' is not known"):
        kmock.Kernel(only_plugins=[], platform="tdx")
    with pytest.raises(KmockUsageError, match="plugins must be a list"):
        kmock.Kernel(plugins=Dup("x"))
    k = kmock.Kernel()
    with pytest.raises(KmockUsageError, match="vm_fd 5"):
        k.vm(5)
    with pytest.raises(KmockUsageError, match="mapping must be"):
        k.gup_pin(None, 0, 4096)
    k.close_all()
