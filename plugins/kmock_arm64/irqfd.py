"""The vGIC's side of irqfd and GSI routing (arch/arm64/kvm/vgic/vgic-irqfd.c, arm.c).

kmock.kvm.eventfds runs the generic code (virt/kvm/eventfd.c, irqchip.c, kvm_main.c) and
asks this model for what the kernel leaves to the architecture, Linux 6.18:

* kvm_arch_intc_initialized (arm.c) is vgic_initialized: KVM_IRQFD before the vGIC was
  initialised (or without one) -> EAGAIN, the first check of kvm_irqfd_assign;
* kvm_arch_irqfd_allowed and kvm_arch_can_set_irq_routing are the __weak defaults (true):
  RESAMPLE is allowed (arm.c advertises KVM_CAP_IRQFD_RESAMPLE), and KVM_SET_GSI_ROUTING
  works without a vGIC;
* kvm_set_routing_entry: IRQCHIP with pin >= KVM_IRQCHIP_NUM_PINS (1020 - 32,
  include/kvm/arm_vgic.h) or irqchip >= KVM_NR_IRQCHIPS (1, arm64 uapi kvm.h) -> EINVAL;
  MSI kept as given; any other type -> EINVAL;
* the default routing is none until vgic_init installs one route per SPI (gsi i -> chip 0
  pin i, kvm_vgic_setup_default_irq_routing), replacing any table set before;
* an irqfd signal: kvm_arch_set_irq_inatomic takes a gsi with exactly one route
  (irqfd_update) to an IRQCHIP pin while the vGIC is initialised, and raises SPI pin + 32
  (vgic_irqfd_set_irq, level 1 only); anything else goes to irqfd_inject, the work:
  kvm_set_irq(gsi, 1) then, without a resampler, kvm_set_irq(gsi, 0) over every route.
  vgic_irqfd_set_irq drops a pin past the vGIC's SPIs (vgic_valid_spi: EINVAL), then
  kvm_vgic_inject_irq runs as for KVM_IRQ_LINE (kmock_arm64.vgic.Vgic.inject: a GICv2
  initialises itself, a GICv3 not initialised drops it: EBUSY). An MSI route goes
  through kvm_set_msi: no ITS is modelled, so -ENODEV and nothing is injected.

kmock reads the irqfds' eventfds at its delivery points (kmock.kvm.eventfds.deliver_irqfds:
each KVM_RUN before the guest runs, and eventfds.signalled_irqfds), where the kernel reads
them in the writer's eventfd_write. The injections show in ``vm.arch.vgic.lines`` (the
level) and ``vm.arch.vgic.raised`` (the count of level-1 injections per interrupt).
"""

import errno

from kmock.errors import oserror
from kmock.kvm import eventfds
from kmock.uapi import kvm as K

from .vgic import VGIC_NR_PRIVATE_IRQS

#: include/kvm/arm_vgic.h
KVM_IRQCHIP_NUM_PINS = 1020 - 32
#: arch/arm64/include/uapi/asm/kvm.h
KVM_NR_IRQCHIPS = 1


def default_routing(nr_spis):
    """kvm_vgic_setup_default_irq_routing: gsi i -> irqchip 0, pin i, for each SPI."""
    return tuple(eventfds.RoutingEntry((i, K.KVM_IRQ_ROUTING_IRQCHIP, 0, (0, i)))
                 for i in range(nr_spis))


def _vgic_irqfd_set_irq(vm, entry, level):
    """vgic_irqfd_set_irq: SPI pin + 32, if the vGIC has it, through kvm_vgic_inject_irq;
    its errors end the injection (the kernel ignores what kvm_set_irq returns)."""
    spi = entry.fields[1] + VGIC_NR_PRIVATE_IRQS
    vgic = vm.arch.vgic
    if vgic is None or spi >= VGIC_NR_PRIVATE_IRQS + vgic.nr_spis:
        return  # !vgic_valid_spi: -EINVAL
    try:
        vgic.inject(None, spi, level)
    except OSError:
        pass  # vgic_lazy_init: a GICv3 not initialised (-EBUSY)


class VgicIrqchip(eventfds.IrqchipModel):
    """The arm64 VM types' ``irqchip_model``."""

    delivers = True

    def intc_initialized(self, vm):
        vgic = vm.arch.vgic
        return vgic is not None and vgic.initialized

    def routing_entry(self, vm, ue):
        if ue.type == K.KVM_IRQ_ROUTING_IRQCHIP:
            chip, pin = ue.u.irqchip.irqchip, ue.u.irqchip.pin
            if pin >= KVM_IRQCHIP_NUM_PINS or chip >= KVM_NR_IRQCHIPS:
                raise oserror(errno.EINVAL)
            return (chip, pin)
        if ue.type == K.KVM_IRQ_ROUTING_MSI:
            m = ue.u.msi
            return (m.address_lo, m.address_hi, m.data, m.devid)
        raise oserror(errno.EINVAL)

    def irqfd_inject(self, vm, irqfd, initial=False):
        entries = [e for e in eventfds.routes(vm) if e.gsi == irqfd.gsi]
        if (not initial and len(entries) == 1
                and entries[0].type == K.KVM_IRQ_ROUTING_IRQCHIP and self.intc_initialized(vm)):
            _vgic_irqfd_set_irq(vm, entries[0], 1)  # kvm_arch_set_irq_inatomic
            return
        # irqfd_inject: raised and lowered, or only raised when a resampler lowers it
        levels = [1] if irqfd.resamplefd is not None else [1, 0]
        for level in levels:  # irqfd_inject: kvm_set_irq over every route of the gsi
            for e in entries:
                if e.type == K.KVM_IRQ_ROUTING_IRQCHIP:
                    _vgic_irqfd_set_irq(vm, e, level)
                # KVM_IRQ_ROUTING_MSI: kvm_set_msi, !vgic_has_its -> -ENODEV


VGIC_IRQCHIP = VgicIrqchip()
