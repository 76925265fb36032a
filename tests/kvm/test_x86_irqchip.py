"""KVM_GET/SET_IRQCHIP and what the state changes in KVM_IRQ_LINE_STATUS
(kmock.kvm.x86_irq) on profile linux-6.18.

The rules were read in Linux 6.18 (irq.c kvm_vm_ioctl_get/set_irqchip, i8259.c, ioapic.c)
and checked on a 6.18.44 host by the conformance scenario x86_irqchip_state; these tests
pin them by name, with a hypothesis model of the two PICs and thread safety.
"""

import ctypes
import errno
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

import kmock
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._util import create_vm, err

SPLIT_IRQCHIP = 121


def kernel_vm(k):
    _, vm = create_vm(k)
    k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
    return vm


def get(k, vm, chip_id, fill=0):
    c = X86.kvm_irqchip(chip_id=chip_id, pad=fill)
    ctypes.memset(ctypes.addressof(c.chip), fill, ctypes.sizeof(c.chip))
    assert k.ioctl(vm, X86.KVM_GET_IRQCHIP, c) == 0
    return c


def set_pic(k, vm, chip_id, **fields):
    c = X86.kvm_irqchip(chip_id=chip_id)
    for name, v in fields.items():
        setattr(c.chip.pic, name, v)
    assert k.ioctl(vm, X86.KVM_SET_IRQCHIP, c) == 0


def line(k, vm, gsi, level):
    ev = K.kvm_irq_level(irq=gsi, level=level)
    assert k.ioctl(vm, K.KVM_IRQ_LINE_STATUS, ev) == 0
    return ev.status


def entry(vector, dest=0, mode=0, level=False, masked=False, remote_irr=False):
    return vector | mode << 8 | remote_irr << 14 | level << 15 | masked << 16 | dest << 56


def set_ioapic(k, vm, table, irr=0, **fields):
    c = X86.kvm_irqchip(chip_id=K.KVM_IRQCHIP_IOAPIC)
    io = c.chip.ioapic
    for pin in range(24):
        io.redirtbl[pin] = table.get(pin, entry(0x20 + pin, masked=True))
    io.irr = irr
    for name, v in fields.items():
        setattr(io, name, v)
    assert k.ioctl(vm, X86.KVM_SET_IRQCHIP, c) == 0


def enabled_vcpu(k, vm, vcpu_id=0):
    cpu = k.ioctl(vm, K.KVM_CREATE_VCPU, vcpu_id)
    page = bytearray(1024)
    k.ioctl(cpu, X86.KVM_GET_LAPIC, page)
    page[0xF0:0xF4] = (0x1FF).to_bytes(4, "little")  # SVR: software enabled
    k.ioctl(cpu, X86.KVM_SET_LAPIC, bytes(page))
    return cpu


# --- the ioctls' checks -----------------------------------------------------------------


def test_the_struct_is_read_before_the_irqchip_check(k):
    _, vm = create_vm(k)
    assert err(k.ioctl, vm, X86.KVM_GET_IRQCHIP, 8) == errno.EFAULT
    assert err(k.ioctl, vm, X86.KVM_SET_IRQCHIP, 8) == errno.EFAULT
    assert err(k.ioctl, vm, X86.KVM_GET_IRQCHIP, X86.kvm_irqchip()) == errno.ENXIO
    assert err(k.ioctl, vm, X86.KVM_SET_IRQCHIP, X86.kvm_irqchip()) == errno.ENXIO


def test_a_split_irqchip_has_no_state_to_get(k):
    _, vm = create_vm(k)
    cap = K.kvm_enable_cap(cap=SPLIT_IRQCHIP)
    cap.args[0] = 24
    k.ioctl(vm, K.KVM_ENABLE_CAP, cap)
    for chip_id in (0, 1, 2):
        assert err(k.ioctl, vm, X86.KVM_GET_IRQCHIP, X86.kvm_irqchip(chip_id=chip_id)) == errno.ENXIO


def test_reset_state_and_the_rest_of_the_struct_comes_back_as_given(k):
    vm = kernel_vm(k)
    master, slave, io = get(k, vm, 0, 0x5A), get(k, vm, 1, 0x5A), get(k, vm, 2, 0x5A)
    assert bytes(master.chip.pic) == bytes(15) + b"\xf8"  # elcr_mask
    assert bytes(slave.chip.pic) == bytes(15) + b"\xde"
    assert bytes(master)[24:] == b"\x5a" * 496 and master.pad == 0x5A
    ioapic = io.chip.ioapic
    assert ioapic.base_address == 0xFEC00000 and ioapic.id == ioapic.irr == ioapic.pad == 0
    assert list(ioapic.redirtbl) == [1 << 16] * 24  # masked, edge, vector 0
    assert bytes(io)[8 + 216:] == b"\x5a" * (512 - 216)


def test_a_bad_chip_id_is_einval_and_changes_nothing(k):
    vm = kernel_vm(k)
    set_pic(k, vm, 0, imr=0x12, elcr=0x08)
    before = [bytes(get(k, vm, i)) for i in range(3)]
    for chip_id in (3, 0xFFFFFFFF):
        c = X86.kvm_irqchip(chip_id=chip_id)
        ctypes.memset(ctypes.addressof(c.chip), 0xFF, 512)
        assert err(k.ioctl, vm, X86.KVM_SET_IRQCHIP, c) == errno.EINVAL
        assert err(k.ioctl, vm, X86.KVM_GET_IRQCHIP, X86.kvm_irqchip(chip_id=chip_id)) == errno.EINVAL
    assert [bytes(get(k, vm, i)) for i in range(3)] == before


def test_pic_bytes_are_kept_as_given(k):
    vm = kernel_vm(k)
    fields = {name: 0x11 + i for i, (name, _) in enumerate(X86.kvm_pic_state._fields_)}
    fields["elcr"] = 0xFF  # beyond elcr_mask: the kernel's memcpy keeps it
    fields["irr"] = 0  # (a slave request would reach the master's pin 2)
    set_pic(k, vm, 1, **fields)
    got = get(k, vm, 1).chip.pic
    assert {n: getattr(got, n) for n in fields} == fields


# --- what the PIC state changes ---------------------------------------------------------


def test_imr_makes_a_pin_minus_one_but_its_request_is_kept(k):
    vm = kernel_vm(k)
    set_pic(k, vm, 0, imr=0x02)
    assert line(k, vm, 1, 1) == -1  # PIC -1, masked I/O APIC -1
    assert get(k, vm, 0).chip.pic.irr == 0x02
    # pic_set_irq1 is -1 for a masked pin whatever the level; the I/O APIC's lowering 1
    assert line(k, vm, 1, 0) == 1


def test_elcr_pins_are_level_triggered(k):
    vm = kernel_vm(k)
    set_pic(k, vm, 0, elcr=0x08)
    # raise 1, raise again: still requested (0), lower clears IRR, raise: 1 again
    assert [line(k, vm, 3, lvl) for lvl in (1, 1, 0, 1)] == [1, 0, 2, 1]
    set_pic(k, vm, 0)
    assert [line(k, vm, 3, lvl) for lvl in (1, 0, 1)] == [1, 2, 0]  # edge: IRR kept


def test_the_slave_reaches_the_master_only_through_pic_get_irq(k):
    vm = kernel_vm(k)
    set_pic(k, vm, 1, irr=0x08, imr=0x08)  # masked request: no cascade
    assert get(k, vm, 0).chip.pic.irr == 0
    set_pic(k, vm, 1, irr=0x08, isr=0x01)  # pin 0 in service has higher priority
    assert get(k, vm, 0).chip.pic.irr == 0
    set_pic(k, vm, 1, irr=0x08, isr=0x01, priority_add=1)  # now pin 3 outranks pin 0
    assert get(k, vm, 0).chip.pic.irr == 0x04


def test_ioapic_delivery_remote_irr_and_irr_delivered(k):
    vm = kernel_vm(k)
    enabled_vcpu(k, vm)
    set_ioapic(k, vm, {16: entry(0x40), 17: entry(0x41, level=True), 18: entry(0x42, dest=7),
                       19: entry(0x43, dest=7, level=True), 21: entry(0, mode=4)},
               id=0xF000_0003, pad=0x1234, ioregsel=0x12, base_address=0xFEC01000)
    assert [line(k, vm, 16, 1), line(k, vm, 16, 1)] == [1, 0]  # then coalesced (edge in IRR)
    assert [line(k, vm, 17, 1), line(k, vm, 17, 1)] == [1, -1]  # remote IRR waits for EOI
    assert line(k, vm, 18, 1) == 0  # no LAPIC with id 7 in the map
    assert line(k, vm, 21, 1) == 1  # NMI
    io = get(k, vm, 2).chip.ioapic
    assert io.redirtbl[17] & (1 << 14) and not io.redirtbl[19] & (1 << 14)
    # a delivered edge is not reported (21, 18), but a coalesced raise marks it
    # undelivered again (16: ioapic_set_irq clears irr_delivered before the check)
    assert io.irr == (1 << 16) | (1 << 17)
    assert (io.id, io.pad, io.ioregsel, io.base_address) == (0xF000_0003, 0x1234, 0x12, 0xFEC01000)


def test_set_ioapic_raises_its_irr_again(k):
    vm = kernel_vm(k)
    enabled_vcpu(k, vm)
    set_ioapic(k, vm, {16: entry(0x40), 17: entry(0x41, level=True), 20: entry(0x44, level=True,
                                                                                 masked=True)},
               irr=(1 << 16) | (1 << 17) | (1 << 20) | 0xFF000000)
    io = get(k, vm, 2).chip.ioapic
    assert io.irr == (1 << 17) | (1 << 20)  # pins beyond 23 dropped, the edge delivered
    assert io.redirtbl[17] & (1 << 14) and not io.redirtbl[20] & (1 << 14)


def test_rtc_is_coalesced_until_its_eoi(k):
    vm = kernel_vm(k)
    enabled_vcpu(k, vm)
    set_ioapic(k, vm, {8: entry(0x38)})
    assert line(k, vm, 8, 1) == 2  # PIC slave pin 0 + the I/O APIC's delivery
    line(k, vm, 8, 0)
    assert line(k, vm, 8, 1) == 0  # the vCPU has not EOIed vector 0x38
    set_ioapic(k, vm, {8: entry(0x58)})  # tracking recomputed: 0x58 is not pending
    line(k, vm, 8, 0)
    assert line(k, vm, 8, 1) == 1  # the PIC's edge is still in IRR: 0 + 1


# --- the PIC pair against a model ------------------------------------------------------


class PicModel:
    """i8259.c's rules, written again for the test: pic_set_irq1, pic_get_irq, the cascade."""

    def __init__(self):
        self.s = [dict.fromkeys(("last_irr", "irr", "imr", "isr", "priority_add", "elcr",
                                 "special_fully_nested_mode"), 0) for _ in range(2)]

    def set1(self, p, pin, level):
        s, m = self.s[p], 1 << pin
        ret = 1
        if s["elcr"] & m:
            ret = int(not s["irr"] & m) if level else 1
            s["irr"] = s["irr"] | m if level else s["irr"] & ~m
            s["last_irr"] = s["last_irr"] | m if level else s["last_irr"] & ~m
        elif level:
            if not s["last_irr"] & m:
                ret = int(not s["irr"] & m)
                s["irr"] |= m
            s["last_irr"] |= m
        else:
            s["last_irr"] &= ~m
        return -1 if s["imr"] & m else ret

    def prio(self, s, mask):
        return next((p for p in range(8) if mask & (1 << ((p + s["priority_add"]) & 7))), 8)

    def get_irq(self, p):
        s = self.s[p]
        pr = self.prio(s, s["irr"] & ~s["imr"])
        isr = s["isr"] & ~4 if p == 0 and s["special_fully_nested_mode"] else s["isr"]
        return pr != 8 and pr < self.prio(s, isr)

    def update(self):
        if self.get_irq(1):
            self.set1(0, 2, 1)
            self.set1(0, 2, 0)


ops = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1), st.integers(0, 255), st.integers(0, 255),
              st.integers(0, 255), st.integers(0, 255), st.integers(0, 7), st.integers(0, 1)),
    st.tuples(st.just("line"), st.integers(0, 15), st.integers(0, 1)))


@settings(max_examples=60, deadline=None)
@given(st.lists(ops, max_size=25))
def test_pics_follow_the_model(seq):
    with kmock.Kernel("linux-6.18") as k:
        _, vm = create_vm(k)
        k.ioctl(vm, K.KVM_CREATE_IRQCHIP, 0)
        # no I/O APIC part: route the GSIs to the PICs only
        table = (K.kvm_irq_routing_entry * 16)()
        for gsi in range(16):
            table[gsi].gsi, table[gsi].type = gsi, K.KVM_IRQ_ROUTING_IRQCHIP
            table[gsi].u.irqchip.irqchip, table[gsi].u.irqchip.pin = gsi >> 3, gsi & 7

        class Routing(ctypes.Structure):
            _fields_ = [("nr", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                        ("e", K.kvm_irq_routing_entry * 16)]
        k.ioctl(vm, K.KVM_SET_GSI_ROUTING, Routing(nr=16, e=table))
        model = PicModel()
        for op in seq:
            if op[0] == "set":
                _, p, irr, imr, isr, elcr, prio, sfnm = op
                set_pic(k, vm, p, irr=irr, imr=imr, isr=isr, elcr=elcr, priority_add=prio,
                        special_fully_nested_mode=sfnm)
                model.s[p].update(last_irr=0, irr=irr, imr=imr, isr=isr, elcr=elcr,
                                  priority_add=prio, special_fully_nested_mode=sfnm)
                model.update()
            else:
                _, gsi, level = op
                want = model.set1(gsi >> 3, gsi & 7, level)
                model.update()
                assert line(k, vm, gsi, level) == want
            for p in (0, 1):
                got = get(k, vm, p).chip.pic
                assert (got.irr, got.last_irr) == (model.s[p]["irr"], model.s[p]["last_irr"])


# --- concurrency ------------------------------------------------------------------------


def test_concurrent_set_get_and_lines_keep_each_state_whole(k):
    """Writers store whole PIC states (all bytes equal), readers never see a mix;
    KVM_IRQ_LINE_STATUS runs alongside."""
    vm = kernel_vm(k)
    errors = []
    stop = threading.Event()

    def writer(v):
        try:
            while not stop.is_set():
                set_pic(k, vm, 1, imr=v, isr=v, priority_add=v & 7, irq_base=v, elcr=v)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    def reader():
        try:
            for _ in range(300):
                s = get(k, vm, 1).chip.pic
                if len({s.imr, s.isr, s.irq_base, s.elcr}) != 1:
                    errors.append(bytes(s).hex())
                line(k, vm, 9, 1)
                line(k, vm, 9, 0)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(v,)) for v in (0x00, 0xF0)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[2:]:
        t.join()
    stop.set()
    for t in threads[:2]:
        t.join()
    assert errors == []
