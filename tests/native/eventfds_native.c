/* KVM_IOEVENTFD, KVM_IRQFD and KVM_SET_GSI_ROUTING from native code
 * (tests/native/test_eventfds_native.py).
 *
 * Registers eventfds the way a VMM does (virtio notifications on an ioeventfd, interrupts on
 * an irqfd, MSI routes) on a VM with an in-kernel irqchip, with the errors a VMM can hit:
 * duplicates, an fd that is no eventfd, a closed fd, a deassign that matches nothing, the
 * same eventfd reached through a dup'ed fd. Every line starts with "up " and must be
 * identical on the real /dev/kvm and under `kmock run`; no fd numbers are printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "native.h"

#define KVMIO 0xAE
#define KVM_CREATE_VM _IO(KVMIO, 0x01)
#define KVM_CREATE_IRQCHIP _IO(KVMIO, 0x60)
#define KVM_GET_VCPU_MMAP_SIZE _IO(KVMIO, 0x04)
#define KVM_CREATE_VCPU _IO(KVMIO, 0x41)
#define KVM_RUN _IO(KVMIO, 0x80)
/* not a kernel ioctl: the test's plugin scripts outb(0xc000, 1) and outb(0xc001, 2) into
 * the vCPU's guest (mock only) */
#define KMOCK_TEST_SCRIPT_OUTB _IO(KVMIO, 0xfe)

struct kvm_ioeventfd { uint64_t datamatch, addr; uint32_t len; int32_t fd; uint32_t flags; uint8_t pad[36]; };
struct kvm_irqfd { uint32_t fd, gsi, flags, resamplefd; uint8_t pad[16]; };
struct kvm_irq_routing_entry { uint32_t gsi, type, flags, pad; uint32_t u[8]; };
struct kvm_irq_routing { uint32_t nr, flags; struct kvm_irq_routing_entry entries[4]; };

#define KVM_IOEVENTFD _IOW(KVMIO, 0x79, struct kvm_ioeventfd)
#define KVM_IRQFD _IOW(KVMIO, 0x76, struct kvm_irqfd)
#define KVM_SET_GSI_ROUTING _IOW(KVMIO, 0x6a, uint64_t)
#define IOEVENTFD_DATAMATCH 1
#define IOEVENTFD_PIO 2
#define IOEVENTFD_DEASSIGN 4
#define IRQFD_DEASSIGN 1
#define IRQFD_RESAMPLE 2
#define ROUTING_IRQCHIP 1
#define ROUTING_MSI 2
#define CLOSED_FD (1 << 30)


static int vm;

static void ioeventfd(const char *what, int fd, uint64_t addr, uint32_t len, uint32_t flags, uint64_t dm)
{
    struct kvm_ioeventfd a = { .datamatch = dm, .addr = addr, .len = len, .fd = fd, .flags = flags };
    printf("up ioeventfd %s: %s\n", what, res(ioctl(vm, KVM_IOEVENTFD, &a)));
}

static void irqfd(const char *what, int fd, uint32_t gsi, uint32_t flags, int resamplefd)
{
    struct kvm_irqfd a = { .fd = fd, .gsi = gsi, .flags = flags, .resamplefd = resamplefd };
    printf("up irqfd %s: %s\n", what, res(ioctl(vm, KVM_IRQFD, &a)));
}

static uint64_t counter(int fd)
{
    uint64_t v = 0;
    if (read(fd, &v, 8) != 8)
        return 0; /* EAGAIN: nothing pending */
    return v;
}

/* "guest" mode (mock only): the scripted guest's outb to an ioeventfd port signals the
 * VMM's own eventfd (the server holds a pidfd_getfd copy); the next outb exits */
static int guest(int kvm)
{
    int notify = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    long size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    uint8_t *run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (vcpu < 0 || run == MAP_FAILED)
        return 1;
    ioeventfd("PIO 0xc000 len 0", notify, 0xc000, 0, IOEVENTFD_PIO, 0);
    printf("up script: %s\n", res(ioctl(vcpu, KMOCK_TEST_SCRIPT_OUTB, 0)));
    printf("up KVM_RUN: %s\n", res(ioctl(vcpu, KVM_RUN, 0)));
    printf("up exit_reason %u port %#x\n", *(uint32_t *)(run + 8), *(uint16_t *)(run + 34));
    printf("up notify counter: %llu\n", (unsigned long long)counter(notify));
    printf("done\n");
    return 0;
}

int main(int argc, char **argv)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        perror("open /dev/kvm");
        return 1;
    }
    vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) {
        perror("KVM_CREATE_VM");
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "guest"))
        return guest(kvm);
    int notify = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int notify2 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int irq = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int irq2 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int resample = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    irqfd("before the irqchip", irq, 5, 0, 0);
    printf("up KVM_CREATE_IRQCHIP: %s\n", res(ioctl(vm, KVM_CREATE_IRQCHIP, 0)));

    /* virtio-pci notification (PIO, any value) and virtio-mmio QueueNotify (MMIO, datamatch) */
    ioeventfd("PIO 0xc000 len 2", notify, 0xc000, 2, IOEVENTFD_PIO, 0);
    ioeventfd("PIO 0xc000 len 2 again", notify, 0xc000, 2, IOEVENTFD_PIO, 0);
    ioeventfd("MMIO 0xd0000050 len 4 datamatch 0", notify2, 0xd0000050, 4, IOEVENTFD_DATAMATCH, 0);
    ioeventfd("MMIO 0xd0000050 len 4 datamatch 1", notify2, 0xd0000050, 4, IOEVENTFD_DATAMATCH, 1);
    ioeventfd("MMIO 0xd0000050 len 0", notify, 0xd0000050, 0, 0, 0);
    ioeventfd("len 3", notify, 0xd0000060, 3, 0, 0);
    ioeventfd("closed fd", CLOSED_FD, 0xd0000060, 4, 0, 0);
    ioeventfd("/dev/kvm fd", kvm, 0xd0000060, 4, 0, 0);
    ioeventfd("deassign datamatch 1", notify2, 0xd0000050, 4, IOEVENTFD_DATAMATCH | IOEVENTFD_DEASSIGN, 1);
    ioeventfd("deassign datamatch 1 again", notify2, 0xd0000050, 4, IOEVENTFD_DATAMATCH | IOEVENTFD_DEASSIGN, 1);
    int dup_notify = dup(notify);
    ioeventfd("deassign PIO through a dup'ed fd", dup_notify, 0xc000, 2, IOEVENTFD_PIO | IOEVENTFD_DEASSIGN, 0);
    ioeventfd("deassign PIO again", notify, 0xc000, 2, IOEVENTFD_PIO | IOEVENTFD_DEASSIGN, 0);

    /* irqfds: one per eventfd, a resampler needs the full irqchip (present here) */
    irqfd("gsi 5", irq, 5, 0, 0);
    irqfd("gsi 5 again", irq, 5, 0, 0);
    int dup_irq = dup(irq);
    irqfd("gsi 6 through a dup'ed fd", dup_irq, 6, 0, 0);
    irqfd("closed fd", CLOSED_FD, 6, 0, 0);
    irqfd("/dev/kvm fd", kvm, 6, 0, 0);
    irqfd("flags 4", irq2, 6, 4, 0);
    irqfd("resample, closed resamplefd", irq2, 10, IRQFD_RESAMPLE, CLOSED_FD);
    irqfd("resample gsi 10", irq2, 10, IRQFD_RESAMPLE, resample);
    irqfd("deassign gsi 6 (bound to 5)", irq, 6, IRQFD_DEASSIGN, 0);
    irqfd("deassign gsi 5", dup_irq, 5, IRQFD_DEASSIGN, 0);
    uint64_t three = 3;
    if (write(irq, &three, 8) != 8)
        return 1;
    irqfd("gsi 5 with 3 pending", irq, 5, 0, 0);
    printf("up counter after KVM_IRQFD: %llu\n", (unsigned long long)counter(irq));

    /* the routing a VMM sets for MSI-X vectors, and the checks of an irqchip route */
    struct kvm_irq_routing r;
    memset(&r, 0, sizeof r);
    r.nr = 3;
    r.entries[0] = (struct kvm_irq_routing_entry){ .gsi = 0, .type = ROUTING_IRQCHIP, .u = { 2, 2 } };
    r.entries[1] = (struct kvm_irq_routing_entry){ .gsi = 24, .type = ROUTING_MSI, .u = { 0xfee00000, 0, 0x41 } };
    r.entries[2] = (struct kvm_irq_routing_entry){ .gsi = 25, .type = ROUTING_MSI, .u = { 0xfee00000, 0, 0x42 } };
    printf("up SET_GSI_ROUTING ioapic + 2 MSI: %s\n", res(ioctl(vm, KVM_SET_GSI_ROUTING, &r)));
    r.entries[2].gsi = 24;
    printf("up SET_GSI_ROUTING MSI twice on one gsi: %s\n", res(ioctl(vm, KVM_SET_GSI_ROUTING, &r)));
    r.entries[2].gsi = 4096;
    printf("up SET_GSI_ROUTING gsi 4096: %s\n", res(ioctl(vm, KVM_SET_GSI_ROUTING, &r)));
    r.nr = 4097;
    printf("up SET_GSI_ROUTING nr 4097: %s\n", res(ioctl(vm, KVM_SET_GSI_ROUTING, &r)));
    r.nr = 1;
    r.entries[0].u[1] = 24;
    printf("up SET_GSI_ROUTING ioapic pin 24: %s\n", res(ioctl(vm, KVM_SET_GSI_ROUTING, &r)));
    irqfd("gsi 24 (an MSI route)", notify2, 24, 0, 0);
    printf("done\n");
    return 0;
}
