/* A TDX launch from native code, under `kmock run --profile linux-6.18-tdx`
 * (tests/native/test_native.py), in Documentation/virt/kvm/x86/intel-tdx.rst's order:
 * KVM_TDX_CAPABILITIES and KVM_TDX_INIT_VM carry a variable-length cpuid array behind
 * kvm_tdx_cmd.data, KVM_TDX_INIT_MEM_REGION a source buffer behind source_addr; the
 * server reads and writes all of them in this process. One line per step. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVMIO 0xAE
struct kvm_cpuid_entry2 { uint32_t function, index, flags, eax, ebx, ecx, edx, padding[3]; };
struct kvm_cpuid2 { uint32_t nent, padding; struct kvm_cpuid_entry2 entries[]; };
struct kvm_tdx_cmd { uint32_t id, flags; uint64_t data, hw_error; };
struct kvm_tdx_capabilities {
    uint64_t supported_attrs, supported_xfam, tdvmcallinfo[4], reserved[250];
    struct kvm_cpuid2 cpuid;
};
struct kvm_tdx_init_vm {
    uint64_t attributes, xfam, mrconfigid[6], mrowner[6], mrownerconfig[6], reserved[12];
    struct kvm_cpuid2 cpuid;
};
struct kvm_tdx_init_mem_region { uint64_t source_addr, gpa, nr_pages; };
struct kvm_enable_cap { uint32_t cap, flags; uint64_t args[4]; uint8_t pad[64]; };
struct kvm_userspace_memory_region2 {
    uint32_t slot, flags;
    uint64_t guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset;
    uint32_t guest_memfd, pad1;
    uint64_t pad2[14];
};
struct kvm_memory_attributes { uint64_t address, size, attributes, flags; };
struct kvm_create_guest_memfd { uint64_t size, flags, reserved[6]; };
_Static_assert(sizeof(struct kvm_tdx_capabilities) == 2056, "caps");
_Static_assert(sizeof(struct kvm_tdx_init_vm) == 264, "init_vm");

#define KVM_CREATE_VM _IO(KVMIO, 0x01)
#define KVM_CREATE_VCPU _IO(KVMIO, 0x41)
#define KVM_SET_CPUID2 _IOW(KVMIO, 0x90, struct kvm_cpuid2)
#define KVM_ENABLE_CAP _IOW(KVMIO, 0xa3, struct kvm_enable_cap)
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#define KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
#define KVM_MEMORY_ENCRYPT_OP _IOWR(KVMIO, 0xba, unsigned long)
#define KVM_X86_TDX_VM 5
#define KVM_CAP_SPLIT_IRQCHIP 121
#define KVM_CAP_EXIT_HYPERCALL 201
#define KVM_HC_MAP_GPA_RANGE 12
#define KVM_MEM_GUEST_MEMFD (1u << 2)
enum { TDX_CAPABILITIES, TDX_INIT_VM, TDX_INIT_VCPU, TDX_INIT_MEM_REGION, TDX_FINALIZE_VM, TDX_GET_CPUID };
#define PG 4096
#define GPA (1ull << 32)
#define NPAGES 64

static const char *res(int r)
{
    static char b[64];
    if (r < 0)
        snprintf(b, sizeof b, "-1 %s", strerrorname_np(errno));
    else
        snprintf(b, sizeof b, "ok");
    return b;
}

static int tdx(int fd, uint32_t id, uint32_t flags, void *data)
{
    struct kvm_tdx_cmd c = {.id = id, .flags = flags, .data = (uintptr_t)data};
    return ioctl(fd, KVM_MEMORY_ENCRYPT_OP, &c);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_TDX_VM);
    printf("tdx vm: %s\n", res(vm));

    struct kvm_tdx_capabilities *caps = calloc(1, sizeof *caps + 16 * sizeof(struct kvm_cpuid_entry2));
    caps->cpuid.nent = 16;
    printf("capabilities: %s", res(tdx(vm, TDX_CAPABILITIES, 0, caps)));
    printf(" sept_ve_disable %d cpuid entries %s\n", !!(caps->supported_attrs & (1ull << 28)),
           caps->cpuid.nent > 0 && caps->cpuid.nent <= 16 ? "filled" : "none");
    struct kvm_tdx_capabilities *small = calloc(1, sizeof *small);
    small->cpuid.nent = 0;
    printf("capabilities nent 0: %s\n", res(tdx(vm, TDX_CAPABILITIES, 0, small)));

    struct kvm_enable_cap cap = {.cap = KVM_CAP_SPLIT_IRQCHIP, .args = {24}};
    printf("split irqchip: %s\n", res(ioctl(vm, KVM_ENABLE_CAP, &cap)));
    struct kvm_enable_cap hc = {.cap = KVM_CAP_EXIT_HYPERCALL, .args = {1ull << KVM_HC_MAP_GPA_RANGE}};
    printf("map_gpa exit: %s\n", res(ioctl(vm, KVM_ENABLE_CAP, &hc)));

    struct kvm_tdx_init_vm *init = calloc(1, sizeof *init + sizeof(struct kvm_cpuid_entry2));
    init->attributes = 1ull << 28; /* SEPT_VE_DISABLE */
    init->xfam = 0x3;
    init->cpuid.nent = 1;
    init->cpuid.entries[0] = (struct kvm_cpuid_entry2){.function = 0x80000008, .eax = (48 << 16) | 0x30};
    printf("init vm: %s\n", res(tdx(vm, TDX_INIT_VM, 0, init)));

    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    /* the CPUID (x2APIC in leaf 1) before KVM_TDX_INIT_VCPU: kvm_apic_set_base needs it */
    struct kvm_cpuid2 *cp = calloc(1, sizeof *cp + 8 * sizeof(struct kvm_cpuid_entry2));
    cp->nent = 8;
    printf("get cpuid: %s", res(tdx(vcpu, TDX_GET_CPUID, 0, cp)));
    printf(" set cpuid2: %s\n", res(ioctl(vcpu, KVM_SET_CPUID2, cp)));
    struct kvm_tdx_cmd iv = {.id = TDX_INIT_VCPU, .data = 0x1000};
    printf("vcpu: %s init %s\n", vcpu < 0 ? "fail" : "ok", res(ioctl(vcpu, KVM_MEMORY_ENCRYPT_OP, &iv)));

    struct kvm_create_guest_memfd cg = {.size = NPAGES * PG};
    int g = ioctl(vm, KVM_CREATE_GUEST_MEMFD, &cg);
    char *shared = mmap(NULL, NPAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    struct kvm_userspace_memory_region2 r = {.slot = 1, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = GPA,
        .memory_size = NPAGES * PG, .userspace_addr = (uintptr_t)shared, .guest_memfd = (uint32_t)g};
    printf("memslot: %s\n", res(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r)));
    struct kvm_memory_attributes ma = {.address = GPA, .size = NPAGES * PG, .attributes = 1ull << 3};
    printf("private: %s\n", res(ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &ma)));

    char *src = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 2 * PG; i++)
        src[i] = (char)i;
    struct kvm_tdx_init_mem_region mr = {.source_addr = (uintptr_t)src, .gpa = GPA, .nr_pages = 2};
    printf("init mem region: %s", res(tdx(vcpu, TDX_INIT_MEM_REGION, 1, &mr)));
    printf(" nr_pages left %llu\n", (unsigned long long)mr.nr_pages);
    struct kvm_tdx_init_mem_region bad = {.source_addr = 8, .gpa = GPA + 2 * PG, .nr_pages = 1};
    printf("init mem region unaligned source: %s\n", res(tdx(vcpu, TDX_INIT_MEM_REGION, 1, &bad)));
    bad.source_addr = PG; /* aligned, not mapped in this process */
    printf("init mem region unmapped source: %s", res(tdx(vcpu, TDX_INIT_MEM_REGION, 1, &bad)));
    printf(" nr_pages left %llu\n", (unsigned long long)bad.nr_pages);
    printf("finalize: %s\n", res(tdx(vm, TDX_FINALIZE_VM, 0, NULL)));
    printf("done\n");
    return 0;
}
