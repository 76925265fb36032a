"""Hypothesis strategies for VMM tests: memory ranges, conversions, guest scripts, DMA.

Every strategy draws requests in the real UAPI's terms (kmock.uapi structs and ioctl
numbers), so a VMM's own code can issue them, on the mock or on a real kernel::

    @given(req=strategies.conversion_requests("attributes-v8", gmem_size=1 << 21))
    def test_convert(kmock, req): ...

Shrinking goes towards small, low, page-sized ranges.
"""

from dataclasses import dataclass

from hypothesis import strategies as st

from ..uapi import gmem as G
from ..uapi import kvm as K

PAGE = 4096
#: the conversion UAPIs (Profile.conversion, plus the VM-level attributes ioctl)
UAPIS = ("vm-attributes", "rfc-v2", "attributes-v8")
#: platform -> (the guest's conversion request, the plugin that will provide it)
PLATFORM_REQUESTS = {"tdx": ("TDG.VP.VMCALL<MapGPA>", "kmock_tdx"),
                     "snp": ("Page State Change (PSC) via the GHCB", "kmock_snp"),
                     "cca": ("RSI_IPA_STATE_SET", "kmock_cca")}


def gmem_ranges(size, max_pages=None):
    """Page-aligned (offset, length) inside a guest_memfd of ``size`` bytes, length > 0."""
    npages = size // PAGE
    limit = npages if max_pages is None else min(npages, max_pages)

    @st.composite
    def ranges(draw):
        start = draw(st.integers(0, npages - 1))
        n = draw(st.integers(1, max(1, min(limit, npages - start))))
        return start * PAGE, n * PAGE

    return ranges()


@dataclass(frozen=True)
class ConversionRequest:
    """One conversion: issue ``request`` with ``arg()`` on the VM fd (``on == "vm"``) or
    the guest_memfd fd (``on == "gmem"``)."""

    uapi: str
    on: str
    request: int
    offset: int  # guest_memfd offset (for "vm": the gpa)
    size: int
    private: bool

    def arg(self):
        if self.uapi == "vm-attributes":
            return K.kvm_memory_attributes(
                address=self.offset, size=self.size,
                attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE if self.private else 0)
        if self.uapi == "rfc-v2":
            return G.kvm_gmem_convert(offset=self.offset, size=self.size)
        a = G.kvm_memory_attributes2(size=self.size,
                                     attributes=K.KVM_MEMORY_ATTRIBUTE_PRIVATE
                                     if self.private else 0)
        a.offset = self.offset
        return a


def conversion_requests(uapi, gmem_size, gpa_base=0, max_pages=None):
    """Conversion requests of ``uapi`` ("vm-attributes", "rfc-v2", "attributes-v8") over
    a guest_memfd of ``gmem_size`` bytes (bound at ``gpa_base`` for "vm-attributes")."""
    if uapi not in UAPIS:
        raise ValueError(f"unknown conversion UAPI {uapi!r}; known: {', '.join(UAPIS)}")

    def build(rng, private):
        off, size = rng
        if uapi == "vm-attributes":
            return ConversionRequest(uapi, "vm", K.KVM_SET_MEMORY_ATTRIBUTES, gpa_base + off,
                                     size, private)
        if uapi == "rfc-v2":
            req = G.KVM_GMEM_CONVERT_PRIVATE if private else G.KVM_GMEM_CONVERT_SHARED
            return ConversionRequest(uapi, "gmem", req, off, size, private)
        return ConversionRequest(uapi, "gmem", G.KVM_SET_MEMORY_ATTRIBUTES2, off, size, private)

    return st.builds(build, gmem_ranges(gmem_size, max_pages), st.booleans())


# --- guest scripts -------------------------------------------------------------------------


@dataclass(frozen=True)
class GuestAccess:
    """One guest action: ("read"|"write", gpa, n / data, private) or
    ("map_gpa_range", gpa, npages, private) or ("outb", port, value)."""

    kind: str
    args: tuple

    def apply(self, guest):
        """Queue this action on a kmock guest (``kernel.vm(fd).vcpus[i].guest``); a dotted
        kind names an architecture's action (``"tdx.map_gpa"`` -> ``guest.tdx.map_gpa``)."""
        target = guest
        for part in self.kind.split("."):
            target = getattr(target, part)
        return target(*self.args)


def guest_scripts(gpa_base, size, max_len=8, ports=(0xE9,)):
    """Lists of GuestAccess inside guest RAM [gpa_base, gpa_base + size); the caller
    ends the script (``guest.hlt()``)."""
    npages = size // PAGE
    page = st.integers(0, npages - 1)
    access = st.one_of(
        st.builds(lambda p, n, pv: GuestAccess("read", (gpa_base + p * PAGE, n, pv)),
                  page, st.integers(1, 16), st.booleans()),
        st.builds(lambda p, d, pv: GuestAccess("write", (gpa_base + p * PAGE, d, pv)),
                  page, st.binary(min_size=1, max_size=16), st.booleans()),
        st.builds(lambda r, pv: GuestAccess("map_gpa_range",
                                            (gpa_base + r[0], r[1] // PAGE, pv)),
                  gmem_ranges(size, max_pages=64), st.booleans()),
        st.builds(lambda port, v: GuestAccess("outb", (port, v)), st.sampled_from(ports),
                  st.integers(0, 255)),
    )
    return st.lists(access, max_size=max_len)


def platform_requests(platform, gpa_base, size, max_len=8, shared_bit=1 << 47):
    """The guest's own conversion requests on a confidential platform, as GuestAccess lists
    inside guest RAM [gpa_base, gpa_base + size):

    ``none``  KVM_HC_MAP_GPA_RANGE (``map_gpa_range``);
    ``tdx``   TDG.VP.VMCALL<MapGPA> (``tdx.map_gpa``): the range's GPA carries ``shared_bit``
              (the TD's GPAW - 1; 47 for GPAW 48) for a conversion to shared;
    ``snp``   GHCB page-state changes: the MSR protocol for one page (``snp.psc_msr``) and
              the NAE event for up to 16 entries ``(gfn, private, page_size)`` (``snp.psc``);
    ``cca``   RSI_IPA_STATE_SET (``cca.ipa_state_set``) of a range to RIPAS RAM (1) or
              EMPTY (0).

    Applying them needs the platform's plugin (its guest namespace); an unknown platform
    is a ValueError naming the known ones.
    """
    ranges = gmem_ranges(size, max_pages=64)
    npages = size // PAGE
    if platform == "none":
        return guest_scripts(gpa_base, size, max_len).map(
            lambda s: [a for a in s if a.kind == "map_gpa_range"])
    if platform == "tdx":
        req = st.builds(lambda r, private: GuestAccess(
            "tdx.map_gpa", ((gpa_base + r[0]) | (0 if private else shared_bit), r[1])),
            ranges, st.booleans())
    elif platform == "snp":
        entry = st.tuples(st.integers(0, npages - 1).map(lambda p: (gpa_base >> 12) + p),
                          st.booleans(), st.just(PAGE))
        req = st.one_of(
            st.builds(lambda p, private: GuestAccess("snp.psc_msr", (gpa_base + p * PAGE, private)),
                      st.integers(0, npages - 1), st.booleans()),
            st.builds(lambda es: GuestAccess("snp.psc", (es,)),
                      st.lists(entry, min_size=1, max_size=16)))
    elif platform == "cca":
        req = st.builds(lambda r, ram: GuestAccess(
            "cca.ipa_state_set", (gpa_base + r[0], gpa_base + r[0] + r[1], int(ram))),
            ranges, st.booleans())
    else:
        raise ValueError(f"unknown platform {platform!r}; known: none, "
                         f"{', '.join(PLATFORM_REQUESTS)}")
    return st.lists(req, max_size=max_len)


# --- DMA -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DmaRequest:
    """A device access: read ``length`` bytes at ``iova``, or write ``data`` there."""

    iova: int
    length: int
    data: bytes = None

    def apply(self, device):
        """Issue it on a kmock VFIO device (``dma_read``/``dma_write``)."""
        if self.data is None:
            return device.dma_read(self.iova, self.length)
        return device.dma_write(self.iova, self.data)


def dma_requests(iova_base, length, max_len=64):
    """DMA reads and writes inside [iova_base, iova_base + length) (any alignment)."""

    @st.composite
    def req(draw):
        off = draw(st.integers(0, length - 1))
        n = draw(st.integers(1, min(max_len, length - off)))
        if draw(st.booleans()):
            return DmaRequest(iova_base + off, n)
        return DmaRequest(iova_base + off, n, draw(st.binary(min_size=n, max_size=n)))

    return req()
