"""The public hypothesis strategies and the VmmMachine base, against the example VMM."""

import errno
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kmock.testing import strategies as S
from kmock.kvm.guest import GuestScript
from kmock.uapi import gmem as G
from kmock.uapi import kvm as K
from kmock.testing.stateful import VmmMachine

from .test_example_vmm_os import vmm_os

SIZE = 1 << 21


@given(S.gmem_ranges(SIZE, max_pages=8))
def test_gmem_ranges_are_page_aligned_and_inside(r):
    off, n = r
    assert off % 4096 == 0 and n % 4096 == 0 and 0 < n <= 8 * 4096 and off + n <= SIZE


@pytest.mark.parametrize("uapi,profile", [("vm-attributes", "linux-6.18"),
                                          ("rfc-v2", "gmem-convert-rfc-v2"),
                                          ("attributes-v8", "gmem-attributes-v8")])
@settings(max_examples=20)
@given(data=st.data())
def test_conversion_requests_are_accepted_by_their_profile(uapi, profile, data):
    import os

    import kmock
    from kmock.uapi import kvm as K

    k = kmock.Kernel(profile)
    try:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        flags = G.GUEST_MEMFD_FLAG_SUPPORT_SHARED if uapi == "rfc-v2" else 0  # in place
        g = k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=SIZE, flags=flags))
        region = K.kvm_userspace_memory_region2(
            slot=0, flags=K.KVM_MEM_GUEST_MEMFD, guest_phys_addr=1 << 32, memory_size=SIZE,
            userspace_addr=1 << 40, guest_memfd=g)
        k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region)
        req = data.draw(S.conversion_requests(uapi, SIZE, gpa_base=1 << 32, max_pages=16))
        fd = vm if req.on == "vm" else g
        try:
            k.ioctl(fd, req.request, req.arg())
        except OSError as e:  # a well-formed request is never rejected as malformed
            assert e.errno not in (errno.EINVAL, errno.ENOTTY, errno.EFAULT), (req, e)
    finally:
        k.close_all()


def test_unknown_uapi_and_platform_requests_are_clear_errors():
    with pytest.raises(ValueError, match="unknown conversion UAPI"):
        S.conversion_requests("v99", SIZE)
    with pytest.raises(ValueError, match="unknown platform"):
        S.platform_requests("z80", 0, SIZE)


PLATFORM_VMS = {  # profile, VM type (KVM_CREATE_VM argument), the action class's module
    "tdx": ("linux-6.18-tdx", 5, "kmock_tdx"),
    "snp": ("linux-6.18-snp", 4, "kmock_snp"),
    "cca": ("linux-arm64-cca", None, "kmock_cca"),
}


@pytest.mark.parametrize("platform", ["tdx", "snp", "cca"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_platform_requests_queue_the_architectures_actions(platform, data):
    """Each drawn request is accepted by the platform's guest namespace and queues one of
    that plugin's actions with the drawn arguments."""
    import kmock

    profile, vmtype, module = PLATFORM_VMS[platform]
    gpa = 1 << 32
    reqs = data.draw(S.platform_requests(platform, gpa, SIZE))
    k = kmock.Kernel(profile)
    try:
        if vmtype is None:
            from kmock.uapi import cca as C

            vmtype = C.KVM_VM_TYPE_ARM_REALM | 40  # the realm type (v14), 40-bit IPA
        vm = k.ioctl(k.open("/dev/kvm", os.O_RDWR), K.KVM_CREATE_VM, vmtype)
        script = GuestScript(k.vm(vm).vmtype.guest_actions)
        for r in reqs:
            action = r.apply(script)
            assert type(action).__module__.startswith(module), action
            name = r.kind.split(".")[1]
            if name == "map_gpa":
                assert (action.gpa, action.size) == r.args
            elif name == "ipa_state_set":
                assert (action.base, action.top, action.ripas) == r.args
        assert len(script) == len(reqs)
    finally:
        k.close_all()


@given(S.dma_requests(0x10000, 0x4000))
def test_dma_requests_stay_inside(req):
    assert 0x10000 <= req.iova and req.iova + req.length <= 0x14000
    assert req.data is None or len(req.data) == req.length


class ExampleVmm(VmmMachine):
    def setup_vmm(self):
        self.vmm = vmm_os.Vmm()
        return self.vmm.vm, self.vmm.ram_gpa, self.vmm.ram_size

    def run_guest(self):
        self.vmm.run()

    def teardown_vmm(self):
        self.vmm.close()


TestExampleVmm = ExampleVmm.TestCase
TestExampleVmm.settings = settings(max_examples=10, stateful_step_count=5, deadline=None)


class BrokenVmm(ExampleVmm):
    """A VMM whose own check says it never serves a to-shared conversion: the machine
    must find a guest script that asks for one (a shared access to a private page, or
    MapGPA to shared)."""

    def check_vmm(self):
        assert not any(not private for _, _, private in self.vmm.conversions), \
            "the guest asked for shared memory"


def test_machine_finds_a_failing_guest_script():
    from hypothesis import Phase
    from hypothesis.stateful import run_state_machine_as_test

    with pytest.raises(AssertionError, match="asked for shared memory"):
        run_state_machine_as_test(BrokenVmm, settings=settings(
            max_examples=50, stateful_step_count=5, deadline=None, database=None,
            phases=[Phase.generate]))  # found, not shrunk (shrinking is slow)


def test_machine_with_a_missing_platform_is_a_clear_error():
    from kmock.testing.platforms import PlatformError

    class Z80Vmm(ExampleVmm):
        platform = "z80"

    with pytest.raises(PlatformError, match="kmock_z80"):
        Z80Vmm()
