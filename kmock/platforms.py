"""Platforms: which confidential hardware the emulated machine has.

A profile names the kernel; its ``platform`` setting names the machine's
confidential hardware: "none", "tdx", "snp", "cca", or one a plugin declares. Any
kernel generation combines with any platform of its architecture
(``kmock.Kernel("gmem-attributes-v8", platform="tdx")``). Plugins declare
platforms with the ``kmock_platforms`` hook; the VM types a platform offers are
those whose ``VmType.platforms`` name it (or are None: every platform of the arch).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    #: the name a profile's ``platform`` setting uses
    name: str
    #: "x86" or "arm64": the profiles it fits
    arch: str
    description: str = ""
    #: profile settings this platform implies, e.g. {"tdx_connect": False} defaults
    settings: tuple = ()


NONE_X86 = Platform("none", "x86", "no confidential-computing hardware")
NONE_ARM64 = Platform("none", "arm64", "no confidential-computing hardware")
