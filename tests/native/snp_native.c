/* An SNP launch from native code, under `kmock run --profile linux-6.18-snp`
 * (tests/native/test_native.py): /dev/sev's fd inside kvm_sev_cmd, a launch struct
 * behind cmd.data, and its source buffer behind launch_update.uaddr, all read from
 * this process by the server. Prints one line per step. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#define KVMIO 0xAE
struct kvm_userspace_memory_region2 {
    uint32_t slot, flags;
    uint64_t guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset;
    uint32_t guest_memfd, pad1;
    uint64_t pad2[14];
};
struct kvm_memory_attributes { uint64_t address, size, attributes, flags; };
struct kvm_create_guest_memfd { uint64_t size, flags, reserved[6]; };
struct kvm_sev_cmd { uint32_t id, pad0; uint64_t data; uint32_t error, sev_fd; };
struct kvm_sev_init { uint64_t vmsa_features; uint32_t flags; uint16_t ghcb_version, pad1; uint32_t pad2[8]; };
struct kvm_sev_snp_launch_start { uint64_t policy; uint8_t gosvw[16]; uint16_t flags; uint8_t pad0[6]; uint64_t pad1[4]; };
struct kvm_sev_snp_launch_update { uint64_t gfn_start, uaddr, len; uint8_t type, pad0; uint16_t flags; uint32_t pad1; uint64_t pad2[4]; };
struct kvm_sev_snp_launch_finish { uint64_t id_block_uaddr, id_auth_uaddr; uint8_t id_block_en, auth_key_en, vcek_disabled, host_data[32], pad0[3]; uint16_t flags; uint64_t pad1[4]; };

#define KVM_CREATE_VM _IO(KVMIO, 0x01)
#define KVM_CREATE_VCPU _IO(KVMIO, 0x41)
#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#define KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
#define KVM_MEMORY_ENCRYPT_OP _IOWR(KVMIO, 0xba, unsigned long)
#define KVM_X86_SNP_VM 4
#define KVM_MEM_GUEST_MEMFD (1u << 2)
#define KVM_SEV_INIT2 22
#define KVM_SEV_SNP_LAUNCH_START 100
#define KVM_SEV_SNP_LAUNCH_UPDATE 101
#define KVM_SEV_SNP_LAUNCH_FINISH 102
#define PG 4096
#define GPA (1ull << 32)

static int op(int vm, uint32_t id, void *data, int sev_fd, uint32_t *error)
{
    struct kvm_sev_cmd c = {.id = id, .data = (uintptr_t)data, .sev_fd = (uint32_t)sev_fd};
    int r = ioctl(vm, KVM_MEMORY_ENCRYPT_OP, &c);
    if (error)
        *error = c.error;
    return r;
}

static const char *res(int r)
{
    static char b[64];
    if (r < 0)
        snprintf(b, sizeof b, "-1 %s", strerrorname_np(errno));
    else
        snprintf(b, sizeof b, "ok");
    return b;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int sev = open("/dev/sev", O_RDWR | O_CLOEXEC);
    printf("open kvm %s sev %s\n", kvm < 0 ? "fail" : "ok", res(sev));
    int vm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SNP_VM);
    printf("snp vm: %s\n", res(vm));
    struct kvm_create_guest_memfd cg = {.size = 16 * PG};
    int g = ioctl(vm, KVM_CREATE_GUEST_MEMFD, &cg);
    printf("gmem: %s\n", res(g));
    char *src = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(src, 0x5a, 16 * PG);
    struct kvm_userspace_memory_region2 r = {.slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = GPA,
        .memory_size = 16 * PG, .userspace_addr = (uintptr_t)src, .guest_memfd = (uint32_t)g};
    printf("memslot: %s\n", res(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r)));
    struct kvm_sev_init init = {0};
    printf("init2: %s\n", res(op(vm, KVM_SEV_INIT2, &init, sev, NULL)));
    printf("vcpu: %s\n", res(ioctl(vm, KVM_CREATE_VCPU, 0)));
    struct kvm_sev_snp_launch_start st = {.policy = (1ull << 17) | (1ull << 16)};
    uint32_t err = 0;
    printf("launch start, kvm fd as sev_fd: %s\n", res(op(vm, KVM_SEV_SNP_LAUNCH_START, &st, kvm, &err)));
    printf("launch start: %s\n", res(op(vm, KVM_SEV_SNP_LAUNCH_START, &st, sev, &err)));
    struct kvm_memory_attributes ma = {.address = GPA, .size = 8 * PG, .attributes = 1ull << 3};
    printf("private: %s\n", res(ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &ma)));
    struct kvm_sev_snp_launch_update u = {.gfn_start = GPA >> 12, .uaddr = (uintptr_t)src, .len = 4 * PG, .type = 1};
    printf("launch update: %s", res(op(vm, KVM_SEV_SNP_LAUNCH_UPDATE, &u, sev, &err)));
    printf(" len left %llu\n", (unsigned long long)u.len);
    struct kvm_sev_snp_launch_update bad = {.gfn_start = (GPA >> 12) + 4, .uaddr = 8, .len = PG, .type = 1};
    printf("launch update unreadable uaddr: %s\n", res(op(vm, KVM_SEV_SNP_LAUNCH_UPDATE, &bad, sev, &err)));
    struct kvm_sev_snp_launch_finish fin = {0};
    printf("launch finish: %s\n", res(op(vm, KVM_SEV_SNP_LAUNCH_FINISH, &fin, sev, &err)));
    printf("done\n");
    return 0;
}
