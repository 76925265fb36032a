"""The fail-nth sweep's scenarios for platform ``cca`` (kmock.testing.fail_nth; offered
through the ``kmock.fail_nth`` entry-point group by ``scenarios()``).

``launch``      a realm VMM's boot: RD (REALM_CREATE at the first POPULATE), RTT_CREATE,
                DATA_CREATE of the image, the first KVM_RUN (REC_CREATE, RTT_INIT_RIPAS,
                REALM_ACTIVATE) and a guest that writes private memory and halts (WFI:
                the vCPU waits in KVM_RUN until a signal for its thread, ``stop()``)
``conversion``  a booted realm whose guest asks RSI_IPA_STATE_SET(EMPTY) then RAM: the VMM
                converts on each memory-fault exit
``map_file``    a realm's guest_memfd mapped for a VFIO device (IOMMU_IOAS_MAP_FILE,
                policy "notifier" as the CCA tests use), then UNMAP
``dma``         map_file of the realm's memory plus device DMA to a shared page, then the
                SMMU's granule protection check refusing DMA to a DATA granule
"""

import kmock
from kmock.testing import fail_nth

from . import rtt
from .vmm import IOVA, RAM, P, RealmVmm

SIZE = 16 * P
IMAGE = b"realm image".ljust(P, b"\0")


def make_kernel():
    import kmock_arm64

    import kmock_cca

    return kmock.Kernel("linux-arm64-cca", plugins=[kmock_arm64, kmock_cca],
                        iommufd_gmem_policy="notifier")


def launch(k):
    v = RealmVmm(k)
    try:
        v.create(SIZE)
        v.populate(RAM, IMAGE)
        v.guest.write(RAM + 4 * P, b"private", private=True)
        v.guest.hlt()
        v.guest.stop()
        v.run()
    finally:
        v.close()


def conversion(k):
    v = RealmVmm(k)
    try:
        v.create(SIZE)
        v.populate(RAM, IMAGE)
        g = v.guest
        g.cca.ipa_state_set(RAM + 8 * P, RAM + 12 * P, rtt.Ripas.EMPTY)
        g.write(RAM + 8 * P, b"shared", private=False)
        g.cca.ipa_state_set(RAM + 8 * P, RAM + 10 * P, rtt.Ripas.RAM)
        g.stop()
        v.run()
    finally:
        v.close()


def map_file(k):
    v = RealmVmm(k)
    try:
        v.create(SIZE)
        v.populate(RAM, IMAGE)
        v.attach_device(0, SIZE)
        v.unmap(SIZE)
    finally:
        v.close()


def dma(k):
    v = RealmVmm(k)
    try:
        v.create(SIZE)
        v.populate(RAM, IMAGE)
        v.set_private(RAM + 8 * P, 4 * P, False)
        dev = v.attach_device(0, SIZE)
        dev.dma_write(IOVA + 8 * P, b"from the device")
        assert dev.dma_read(IOVA + 8 * P, 15) == b"from the device"
        try:
            dev.dma_write(IOVA, b"into the realm")  # page 0 holds the image: a DATA granule
        except kmock.DmaFault:
            pass
    finally:
        v.close()


SCENARIOS = {"launch": launch, "conversion": conversion, "map_file": map_file, "dma": dma}


# What KVM itself keeps when these steps fail (kmock.testing.fail_nth): declared here,
# where the scenarios are, so that any sweep on platform cca knows them.
POPULATE = "ioctl KVM_ARM_RMI_POPULATE"  # (as kmock.trace names it: every revision)
RUN = "ioctl KVM_RUN"
GMEM_ARCH = ("guest_memfds", "arch")
fail_nth.keeps_progress(
    "cca", "cca.rmi.granule_delegate", "the RD and RTTs created before stay the realm's "
    "until kvm_destroy_realm, and kvm_gmem_populate leaves the page's folio in the "
    "guest_memfd (realm_ensure_created, realm_create_rtt_levels, v14 27/44, 28/44; "
    "virt/kvm/guest_memfd.c)", POPULATE, GMEM_ARCH)
fail_nth.keeps_progress(
    "cca", "cca.rmi.rtt_create", "realm_create_rtt_levels keeps the tables it created, "
    "kvm_gmem_populate the page's folio (v14 27/44; virt/kvm/guest_memfd.c)",
    POPULATE, GMEM_ARCH)
fail_nth.keeps_progress(
    "cca", "cca.rmi.data_create", "the RD and RTTs stay, and kvm_gmem_populate leaves the "
    "failing page's folio in the guest_memfd (v14 26/44, virt/kvm/guest_memfd.c)",
    POPULATE, GMEM_ARCH)
fail_nth.keeps_progress(
    "cca", "copy_to_user", "KVM_ARM_RMI_POPULATE's pages stay populated when the "
    "write-back of its progress fails (v14 26/44)", POPULATE, GMEM_ARCH)
for _point in ("granule_delegate", "rtt_create"):
    fail_nth.keeps_progress(
        "cca", f"cca.rmi.{_point}", "a realm fault keeps the RTTs realm_create_rtt_levels "
        "created (v14 27/44); at activation kvm_activate_realm has marked the realm DEAD "
        "first (v14 18/44)", RUN, ("arch",))
for _point in ("rec_create", "rtt_init_ripas", "realm_activate"):
    fail_nth.keeps_progress(
        "cca", f"cca.rmi.{_point}", "kvm_activate_realm marks the realm DEAD before it "
        "starts (\"in case we fail\", v14 18/44)", RUN, ("arch",))


def scenarios():
    """The ``kmock.fail_nth`` entry point: {name: (scenario, make_kernel)}."""
    return {name: (fn, make_kernel) for name, fn in SCENARIOS.items()}
