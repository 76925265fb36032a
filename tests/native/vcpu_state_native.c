/* The x86 vCPU setup sequence of a VMM from native code (tests/native/test_vcpu_state_native.py).
 *
 * What QEMU, crosvm or the selftests' kvm_util do before the first KVM_RUN: the MSR index
 * lists with their E2BIG protocol, KVM_SET_CPUID2 from KVM_GET_SUPPORTED_CPUID, then
 * the register and state ioctls (long mode through SREGS, REGS, FPU, MSRS, MP_STATE,
 * VCPU_EVENTS, DEBUGREGS, XCRS, XSAVE, TSC_KHZ, SIGNAL_MASK), and the errno of a few bad
 * calls. The flexible-array ioctls (MSRS, CPUID2, MSR lists) are the ones whose size the
 * handler decides. Every line starts with "up " and must be identical on the real
 * /dev/kvm and under `kmock run --profile host`; no fd numbers, addresses or TSC values.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>
#include "native.h"

#define MSR_IA32_TSC 0x10


static struct kvm_msr_list *msr_list(int kvm, unsigned long req, const char *name)
{
    struct kvm_msr_list probe = { .nmsrs = 0 };
    long r = ioctl(kvm, req, &probe);
    printf("up %s nmsrs=0: %s, nmsrs now %u\n", name, res(r), probe.nmsrs);
    struct kvm_msr_list *l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(uint32_t));
    l->nmsrs = probe.nmsrs;
    r = ioctl(kvm, req, l);
    printf("up %s: %s, %u MSRs:", name, res(r), l->nmsrs);
    for (unsigned i = 0; i < l->nmsrs; i++)
        printf(" %#x", l->indices[i]);
    printf("\n");
    return l;
}

int main(void)
{
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) {
        perror("open /dev/kvm");
        return 1;
    }
    struct kvm_msr_list *msrs = msr_list(kvm, KVM_GET_MSR_INDEX_LIST, "KVM_GET_MSR_INDEX_LIST");
    free(msr_list(kvm, KVM_GET_MSR_FEATURE_INDEX_LIST, "KVM_GET_MSR_FEATURE_INDEX_LIST"));
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    printf("up create vm, vcpu: %d %d\n", vm >= 0, vcpu >= 0);

    /* CPUID: the supported table goes to the vCPU as it is */
    struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + 256 * sizeof(struct kvm_cpuid_entry2));
    cpuid->nent = 256;
    long r = ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid);
    printf("up KVM_GET_SUPPORTED_CPUID: %s\n", res(r));
    printf("up KVM_SET_CPUID2: %s\n", res(ioctl(vcpu, KVM_SET_CPUID2, cpuid)));
    struct kvm_cpuid2 small = { .nent = 1 };
    r = ioctl(vcpu, KVM_GET_CPUID2, &small);
    printf("up KVM_GET_CPUID2 nent=1: %s, nent now %u\n", res(r), small.nent);
    struct kvm_cpuid2 *back = calloc(1, sizeof(*back) + 256 * sizeof(struct kvm_cpuid_entry2));
    back->nent = 256;
    r = ioctl(vcpu, KVM_GET_CPUID2, back);
    printf("up KVM_GET_CPUID2 nent=256: %s, nonzero nent %d\n", res(r), back->nent > 0);
    cpuid->nent = 257;
    printf("up KVM_SET_CPUID2 nent=257: %s\n", res(ioctl(vcpu, KVM_SET_CPUID2, cpuid)));

    /* long mode, as kvm_util's vcpu_init_sregs */
    struct kvm_sregs sregs;
    r = ioctl(vcpu, KVM_GET_SREGS, &sregs);
    printf("up KVM_GET_SREGS: %s cr0 %#llx cs.base %#llx apic_base %#llx\n", res(r), sregs.cr0,
           sregs.cs.base, sregs.apic_base);
    sregs.cr0 = 0x80000011;
    sregs.cr4 = 0x20;
    sregs.cr3 = 0x9000;
    sregs.efer = 0x500;
    sregs.cs = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = 8, .type = 11,
                                     .present = 1, .s = 1, .l = 1, .g = 1 };
    sregs.ds = sregs.es = sregs.ss = (struct kvm_segment){ .limit = 0xffffffff, .selector = 16,
                                                           .type = 3, .present = 1, .s = 1,
                                                           .db = 1, .g = 1 };
    printf("up KVM_SET_SREGS long mode: %s\n", res(ioctl(vcpu, KVM_SET_SREGS, &sregs)));
    struct kvm_sregs got;
    ioctl(vcpu, KVM_GET_SREGS, &got);
    printf("up KVM_GET_SREGS equal: %d\n", memcmp(&got, &sregs, sizeof got) == 0);
    sregs.cr0 = 0x80000010;
    printf("up KVM_SET_SREGS PG without PE: %s\n", res(ioctl(vcpu, KVM_SET_SREGS, &sregs)));

    struct kvm_regs regs = { .rip = 0x401000, .rsp = 0x7ff000, .rflags = 0, .rdi = 42 };
    printf("up KVM_SET_REGS: %s\n", res(ioctl(vcpu, KVM_SET_REGS, &regs)));
    struct kvm_regs rgot;
    ioctl(vcpu, KVM_GET_REGS, &rgot);
    printf("up KVM_GET_REGS rip %#llx rsp %#llx rflags %#llx rdi %llu rdx %#llx\n", rgot.rip,
           rgot.rsp, rgot.rflags, rgot.rdi, rgot.rdx);

    struct kvm_fpu fpu;
    ioctl(vcpu, KVM_GET_FPU, &fpu);
    printf("up KVM_GET_FPU fcw %#x mxcsr %#x\n", fpu.fcw, fpu.mxcsr);
    fpu.fcw = 0x37e;
    fpu.xmm[3][0] = 7;
    printf("up KVM_SET_FPU: %s\n", res(ioctl(vcpu, KVM_SET_FPU, &fpu)));
    ioctl(vcpu, KVM_GET_FPU, &fpu);
    printf("up KVM_GET_FPU fcw %#x xmm3 %u\n", fpu.fcw, fpu.xmm[3][0]);

    /* every listed MSR, read back; then a few written */
    struct kvm_msrs *m = calloc(1, sizeof(*m) + msrs->nmsrs * sizeof(struct kvm_msr_entry));
    m->nmsrs = msrs->nmsrs;
    for (unsigned i = 0; i < msrs->nmsrs; i++)
        m->entries[i].index = msrs->indices[i];
    r = ioctl(vcpu, KVM_GET_MSRS, m);
    printf("up KVM_GET_MSRS all: %s\n", res(r));
    printf("up MSR values:");
    for (long i = 0; i < r; i++)
        if (m->entries[i].index != MSR_IA32_TSC)
            printf(" %#x=%#llx", m->entries[i].index, m->entries[i].data);
    printf("\n");
    struct { struct kvm_msrs h; struct kvm_msr_entry e[3]; } w = {
        .h.nmsrs = 3,
        .e = { { .index = 0xc0000081, .data = 0x0023001000000000ull },
               { .index = 0xdeadbeef, .data = 1 },
               { .index = 0xc0000084, .data = 0x47700 } } };
    printf("up KVM_SET_MSRS STAR, unknown, SFMASK: %s\n", res(ioctl(vcpu, KVM_SET_MSRS, &w)));
    w.h.nmsrs = 256;
    printf("up KVM_SET_MSRS nmsrs=256: %s\n", res(ioctl(vcpu, KVM_SET_MSRS, &w)));

    struct kvm_mp_state mp;
    r = ioctl(vcpu, KVM_GET_MP_STATE, &mp);
    printf("up KVM_GET_MP_STATE: %s %u\n", res(r), mp.mp_state);
    mp.mp_state = KVM_MP_STATE_HALTED;
    printf("up KVM_SET_MP_STATE HALTED: %s\n", res(ioctl(vcpu, KVM_SET_MP_STATE, &mp)));
    struct kvm_vcpu_events ev;
    r = ioctl(vcpu, KVM_GET_VCPU_EVENTS, &ev);
    printf("up KVM_GET_VCPU_EVENTS: %s flags %#x\n", res(r), ev.flags);
    ev.flags = 0x40;
    printf("up KVM_SET_VCPU_EVENTS flags 0x40: %s\n", res(ioctl(vcpu, KVM_SET_VCPU_EVENTS, &ev)));
    struct kvm_debugregs dbg;
    ioctl(vcpu, KVM_GET_DEBUGREGS, &dbg);
    printf("up KVM_GET_DEBUGREGS dr6 %#llx dr7 %#llx\n", dbg.dr6, dbg.dr7);
    struct kvm_xcrs xcrs;
    ioctl(vcpu, KVM_GET_XCRS, &xcrs);
    printf("up KVM_GET_XCRS nr %u xcr0 %#llx\n", xcrs.nr_xcrs, xcrs.xcrs[0].value);
    xcrs.xcrs[0].value = 7;
    printf("up KVM_SET_XCRS 7: %s\n", res(ioctl(vcpu, KVM_SET_XCRS, &xcrs)));
    struct kvm_xsave *xs = calloc(1, sizeof(*xs));
    r = ioctl(vcpu, KVM_GET_XSAVE, xs);
    printf("up KVM_GET_XSAVE: %s mxcsr %#x\n", res(r), xs->region[6]);
    printf("up KVM_SET_XSAVE: %s\n", res(ioctl(vcpu, KVM_SET_XSAVE, xs)));
    long khz = ioctl(vcpu, KVM_GET_TSC_KHZ, 0);
    printf("up KVM_SET_TSC_KHZ same: %s\n", res(ioctl(vcpu, KVM_SET_TSC_KHZ, khz)));
    struct { struct kvm_signal_mask h; uint8_t set[8]; } sm = { .h.len = 8 };
    printf("up KVM_SET_SIGNAL_MASK: %s\n", res(ioctl(vcpu, KVM_SET_SIGNAL_MASK, &sm)));
    printf("up KVM_GET_REGS(NULL): %s\n", res(ioctl(vcpu, KVM_GET_REGS, NULL)));
    printf("up KVM_GET_MSRS(8): %s\n", res(ioctl(vcpu, KVM_GET_MSRS, (void *)8)));
    printf("done\n");
    return 0;
}
