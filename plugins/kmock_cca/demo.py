"""``kmock demo --platform cca`` (the ``kmock.demos`` entry point): a small VMM boots a
realm launched with KVM_ARM_RMI_POPULATE; the realm gives memory back with
RSI_IPA_STATE_SET(EMPTY) and the VMM converts it on the memory-fault exit; a VFIO device
gets the realm's guest_memfd through IOMMU_IOAS_MAP_FILE; its DMA to the shared part
works and its DMA into the realm's image (a DATA granule, Realm PAS) is refused by the
SMMU's granule protection check: the platform's way of going wrong."""

import kmock
from kmock.testing.demo_vmm import Story

from .rtt import Ripas
from .vmm import IOVA, RAM, P, RealmVmm

SIZE = 64 * P
SHARED = RAM + 32 * P


def run(out=print, platform="cca", trace=None):
    """Run the demo; returns (kernel, story lines). The caller closes the kernel."""
    import kmock_arm64

    import kmock_cca

    say = Story(out)

    kernel = kmock.Kernel("linux-arm64-cca", plugins=[kmock_arm64, kmock_cca], trace=trace,
                          iommufd_gmem_policy="notifier")
    vmm = RealmVmm(kernel).create(SIZE)
    say(f"VMM: realm VM (KVM_VM_TYPE_ARM_REALM, 40-bit IPA), vGICv3, {SIZE >> 10} KiB "
        f"guest_memfd at IPA {RAM:#x} made PRIVATE, vCPU 0 with PSCI 0.2")
    vmm.populate(RAM, b"realm image".ljust(2 * P, b"\0"))
    say("VMM: KVM_ARM_RMI_POPULATE (MEASURE) of a 2-page image: REALM_CREATE, RTT_CREATE, "
        "GRANULE_DELEGATE + DATA_CREATE (the pages become DATA granules in the Realm PAS)")
    g = vmm.guest
    g.cca.ipa_state_set(SHARED, SHARED + 16 * P, Ripas.EMPTY)
    g.write(SHARED, b"hello device", private=False)
    g.write(RAM + 8 * P, b"secret", private=True)
    g.psci.system_off()
    say(f"realm: RSI_IPA_STATE_SET(EMPTY) of 64 KiB at {SHARED:#x}, writes there through "
        "the unprotected alias, writes a secret in its RAM, then PSCI SYSTEM_OFF")
    exits = vmm.run(on_exit=lambda line: say("VMM: " + line))
    say(f"VMM: KVM_RUN activated the realm (REC_CREATE, RTT_INIT_RIPAS, REALM_ACTIVATE); "
        f"{len(exits)} exit(s), the last KVM_EXIT_SYSTEM_EVENT (SHUTDOWN: the realm's "
        "SYSTEM_OFF; every vCPU is now stopped)")
    dev = vmm.attach_device(0, SIZE)
    say(f"VMM: VFIO device {dev.path} bound to /dev/iommu; IOAS {vmm.ioas} maps the whole "
        f"guest_memfd at iova {IOVA:#x} (IOMMU_IOAS_MAP_FILE)")
    off = SHARED - RAM
    dev.dma_write(IOVA + off, b"from the device")
    say(f"device: DMA write at iova {IOVA + off:#x} (a page the realm gave up): "
        f"read back {dev.dma_read(IOVA + off, 15)!r}")
    say(f"device: DMA write at iova {IOVA:#x} (the realm's measured image)")
    try:
        dev.dma_write(IOVA, b"overwrite")
        say("  the write went through: the realm's memory is not protected")
    except kmock.DmaFault as e:
        say(f"  DMA fault: {e}")
    say.violations(kernel)
    # the VMM's own mappings and fds stay open: the caller dumps the state, then closes
    return kernel, say.lines
