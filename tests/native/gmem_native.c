/* A native VMM-like program for kmock's native tier (tests/native/test_native.py).
 *
 * It prints one line per step: "<step>: <result>". Lines of upstream calls start with
 * "up "; they must be identical on the real /dev/kvm and under `kmock run --profile host`.
 * Lines starting with "ext " use UAPIs that are not upstream (in-place conversion,
 * guest_memfd in iommufd) or devices this machine lacks (/dev/iommu, VFIO); they print
 * "skip" where the kernel does not offer them. No fd numbers or addresses are printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

#define KVMIO 0xAE
#define KVM_GET_API_VERSION _IO(KVMIO, 0x00)
#define KVM_CREATE_VM _IO(KVMIO, 0x01)
#define KVM_CHECK_EXTENSION _IO(KVMIO, 0x03)
#define KVM_GET_VCPU_MMAP_SIZE _IO(KVMIO, 0x04)
#define KVM_CREATE_VCPU _IO(KVMIO, 0x41)

struct kvm_userspace_memory_region2 {
    uint32_t slot, flags;
    uint64_t guest_phys_addr, memory_size, userspace_addr, guest_memfd_offset;
    uint32_t guest_memfd, pad1;
    uint64_t pad2[14];
};
struct kvm_memory_attributes { uint64_t address, size, attributes, flags; };
struct kvm_memory_attributes2 { uint64_t offset, size, attributes, flags, error_offset, reserved[11]; };
struct kvm_create_guest_memfd { uint64_t size, flags, reserved[6]; };

#define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
#define KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
#define KVM_SET_MEMORY_ATTRIBUTES2 _IOWR(KVMIO, 0xd2, struct kvm_memory_attributes2)
#define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)

#define KVM_CAP_USER_MEMORY2 231
#define KVM_CAP_MEMORY_ATTRIBUTES 233
#define KVM_CAP_GUEST_MEMFD 234
#define KVM_CAP_VM_TYPES 235
#define KVM_CAP_GUEST_MEMFD_FLAGS 244
#define KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES 250 /* gmem-attributes-v8 */
#define KVM_MEM_GUEST_MEMFD (1u << 2)
#define KVM_MEMORY_ATTRIBUTE_PRIVATE (1ull << 3)
#define GUEST_MEMFD_FLAG_MMAP (1ull << 0)
#define GUEST_MEMFD_FLAG_INIT_SHARED (1ull << 1)
#define KVM_X86_SW_PROTECTED_VM 1

/* iommufd / VFIO cdev */
#define IOMMUFD_TYPE ';'
struct iommu_ioas_alloc { uint32_t size, flags, out_ioas_id; };
struct iommu_ioas_map_file { uint32_t size, flags, ioas_id; int32_t fd; uint64_t start, length, iova; };
struct vfio_device_bind_iommufd { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
struct vfio_device_attach_iommufd_pt { uint32_t argsz, flags, pt_id; };
#define IOMMU_IOAS_ALLOC _IO(IOMMUFD_TYPE, 0x81)
#define IOMMU_IOAS_MAP_FILE _IO(IOMMUFD_TYPE, 0x8f)
#define IOMMU_IOAS_MAP_FIXED_IOVA (1 << 0)
#define IOMMU_IOAS_MAP_WRITEABLE (1 << 1)
#define IOMMU_IOAS_MAP_READABLE (1 << 2)
#define VFIO_DEVICE_BIND_IOMMUFD _IO(';', 100 + 18)
#define VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(';', 100 + 19)

#define PG 4096
#define GSIZE (1 << 20)

static const char *res(long r)
{
    static __thread char b[64];
    if (r < 0)
        snprintf(b, sizeof b, "-1 %s", strerrorname_np(errno));
    else
        snprintf(b, sizeof b, "ok");
    return b;
}

static sigjmp_buf jb;
static volatile int in_probe;
static void on_sigbus(int sig) { (void)sig; if (in_probe) siglongjmp(jb, 1); _exit(99); }

/* 1 if reading *p raises SIGBUS */
static int sigbus_read(volatile char *p)
{
    in_probe = 1;
    if (sigsetjmp(jb, 1)) {
        in_probe = 0;
        return 1;
    }
    (void)*p;
    in_probe = 0;
    return 0;
}

static int create_gmem(int vm, uint64_t size, uint64_t flags)
{
    struct kvm_create_guest_memfd g = {.size = size, .flags = flags};
    return ioctl(vm, KVM_CREATE_GUEST_MEMFD, &g);
}


struct conv_arg { int gmem, idx; };

/* flip one page between private and shared; leave it private for even idx */
static void *convert_body(void *p)
{
    struct conv_arg *a = p;
    long ok = 0;
    for (int i = 0; i < 40; i++) {
        int priv = (i & 1) == 0;
        if (i == 39)
            priv = (a->idx & 1) == 0;
        struct kvm_memory_attributes2 m = {.offset = (uint64_t)(8 + a->idx) * PG, .size = PG,
                                           .attributes = priv ? KVM_MEMORY_ATTRIBUTE_PRIVATE : 0};
        ok += ioctl(a->gmem, KVM_SET_MEMORY_ATTRIBUTES2, &m) == 0;
    }
    return (void *)ok;
}

static void *thread_body(void *arg)
{
    int vm = *(int *)arg;
    int ok = 0;
    for (int i = 0; i < 50; i++) {
        int g = create_gmem(vm, 16 * PG, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
        if (g < 0)
            continue;
        char *p = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, g, 0);
        if (p != MAP_FAILED) {
            p[0] = (char)i;
            ok += p[0] == (char)i && fallocate(g, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PG) == 0 && p[0] == 0;
            munmap(p, 16 * PG);
        }
        close(g);
    }
    return (void *)(intptr_t)ok;
}


/* The file-level cases of the kernel's guest_memfd selftest (guest_memfd_test.c), written
 * here independently: what an unmodified build of it exercises on a barebones VM. */
static void selftest_cases(int vm)
{
    struct stat s1, s2;
    int bad = 0, ok_flags = 0;
    for (size_t size = 1; size < PG; size++)
        bad += create_gmem(vm, size, 0) < 0 && errno == EINVAL;
    printf("sel invalid sizes EINVAL: %d/%d\n", bad, PG - 1);
    for (int bit = 0; bit < 64; bit++) {
        int fd = create_gmem(vm, PG, 1ull << bit);
        if (fd >= 0) {
            ok_flags |= 1 << bit;
            close(fd);
        } else if (errno != EINVAL) {
            printf("sel flag bit %d: %s\n", bit, res(-1));
        }
    }
    printf("sel valid flag bits: %#x\n", ok_flags);
    int a = create_gmem(vm, PG, 0), b = create_gmem(vm, 2 * PG, 0);
    fstat(a, &s1);
    fstat(b, &s2);
    printf("sel multiple: sizes %lld %lld distinct inodes %d blksize %ld\n", (long long)s1.st_size,
           (long long)s2.st_size, s1.st_ino != s2.st_ino, (long)s1.st_blksize);
    void *nm = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
    printf("sel mmap without MMAP flag: %s\n", nm == MAP_FAILED ? res(-1) : "ok");
    close(a);
    close(b);

    int total = 4 * PG;
    int g = create_gmem(vm, total, 0);
    struct { long off, len; int mode; } fa[] = {
        {0, total, FALLOC_FL_KEEP_SIZE},
        {PG - 1, PG, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE},
        {total, PG, FALLOC_FL_KEEP_SIZE},
        {total + PG, PG, FALLOC_FL_KEEP_SIZE},
        {total, PG, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE},
        {total + PG, PG, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE},
        {PG, PG - 1, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE},
        {PG, PG, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE},
        {PG, PG, FALLOC_FL_KEEP_SIZE},
    };
    for (unsigned i = 0; i < sizeof fa / sizeof fa[0]; i++)
        printf("sel fallocate mode %d off %ld len %ld: %s\n", fa[i].mode, fa[i].off, fa[i].len,
               res(fallocate(g, fa[i].mode, fa[i].off, fa[i].len)));
    long offs[] = {0, 1, PG}, lens[] = {1, PG - 1, PG, PG + 1};
    bad = 0;
    int n = 0;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 4; j++) {
            if (offs[i] % PG == 0 && lens[j] % PG == 0)
                continue;
            n++;
            bad += fallocate(g, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, offs[i], lens[j]) < 0 && errno == EINVAL;
        }
    printf("sel invalid punch EINVAL: %d/%d\n", bad, n);
    close(g);

    /* host faults: private pages without INIT_SHARED, and past the end of the file */
    g = create_gmem(vm, total, GUEST_MEMFD_FLAG_MMAP);
    char *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, g, 0);
    printf("sel fault_private: mmap %s sigbus %d %d\n", m == MAP_FAILED ? res(-1) : "ok",
           m != MAP_FAILED && sigbus_read(m), m != MAP_FAILED && sigbus_read(m + total - PG));
    if (m != MAP_FAILED)
        munmap(m, total);
    close(g);
    g = create_gmem(vm, total, GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED);
    m = mmap(NULL, 4 * total, PROT_READ | PROT_WRITE, MAP_SHARED, g, 0);
    memset(m, 0xaa, total);
    printf("sel fault_overflow: last page %d past end %d value %d\n", sigbus_read(m + total - PG),
           sigbus_read(m + total), (unsigned char)m[total - 1]);
    printf("sel madvise hugepage: %s collapse: %s\n", res(madvise(m, total, MADV_HUGEPAGE)),
           res(madvise(m, total, MADV_COLLAPSE)));
    printf("sel madvise dontneed: %s value %d\n", res(madvise(m, total, MADV_DONTNEED)),
           (unsigned char)m[0]);
    munmap(m, 4 * total);
    close(g);
}

int main(void)
{
    struct sigaction sa = {.sa_handler = on_sigbus};
    sigaction(SIGBUS, &sa, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    printf("up open /dev/kvm: %s\n", res(kvm));
    if (kvm < 0)
        return 1;
    printf("up api version: %d\n", ioctl(kvm, KVM_GET_API_VERSION, 0));
    int caps[] = {KVM_CAP_USER_MEMORY2, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_GUEST_MEMFD,
                  KVM_CAP_VM_TYPES, KVM_CAP_GUEST_MEMFD_FLAGS};
    for (unsigned i = 0; i < sizeof caps / sizeof caps[0]; i++)
        printf("up cap %d: %d\n", caps[i], ioctl(kvm, KVM_CHECK_EXTENSION, caps[i]));
    int vcpu_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    printf("up vcpu mmap size: %d\n", vcpu_size);

    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    printf("up create vm: %s\n", res(vm));
    struct stat st;
    printf("up fstat kvm: %s\n", res(fstat(kvm, &st)));
    int d = dup(vm);
    printf("up dup vm: %s cap via dup %d\n", res(d), ioctl(d, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD));
    close(d);

    selftest_cases(vm);

    /* a module parameter the selftests' x86 library constructor reads */
    int pfd = open("/sys/module/kvm/parameters/force_emulation_prefix", O_RDONLY);
    char pbuf[16] = "";
    ssize_t pn = pfd < 0 ? -1 : read(pfd, pbuf, sizeof pbuf - 1);
    if (pfd >= 0)
        close(pfd);
    printf("up force_emulation_prefix: %s %s", res(pn), pn > 0 ? pbuf : "\n");

    /* guest_memfd: creation and bad arguments */
    printf("up gmem size 0: %s\n", res(create_gmem(vm, 0, 0)));
    printf("up gmem unaligned: %s\n", res(create_gmem(vm, PG + 1, 0)));
    printf("up gmem bad flag: %s\n", res(create_gmem(vm, GSIZE, 1ull << 40)));
    uint64_t gflags = GUEST_MEMFD_FLAG_MMAP | GUEST_MEMFD_FLAG_INIT_SHARED;
    int g = create_gmem(vm, GSIZE, gflags);
    printf("up gmem mmap|init_shared: %s\n", res(g));
    if (g < 0)
        return 2;
    printf("up gmem fstat: %s", res(fstat(g, &st)));
    printf(" size %lld reg %d\n", (long long)st.st_size, S_ISREG(st.st_mode));
    char buf[16];
    printf("up gmem read: %s\n", res(read(g, buf, sizeof buf)));
    printf("up gmem write: %s\n", res(write(g, buf, sizeof buf)));
    printf("up gmem pread: %s\n", res(pread(g, buf, sizeof buf, 0)));
    printf("up gmem ftruncate: %s\n", res(ftruncate(g, 2 * GSIZE)));
    printf("up gmem lseek end: %s\n", res(lseek(g, 0, SEEK_END)));

    /* fallocate and punch */
    printf("up fallocate 64K: %s\n", res(fallocate(g, 0, 0, 16 * PG)));
    printf("up fallocate keep_size 64K: %s\n", res(fallocate(g, FALLOC_FL_KEEP_SIZE, 0, 16 * PG)));
    printf("up posix_fallocate: %d\n", posix_fallocate(g, 0, PG));
    printf("up punch no keep_size: %s\n", res(fallocate(g, FALLOC_FL_PUNCH_HOLE, 0, PG)));
    printf("up punch unaligned: %s\n", res(fallocate(g, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1, PG)));
    printf("up fallocate beyond eof: %s\n", res(fallocate(g, 0, GSIZE, PG)));

    /* mmap: shared memory, MAP_PRIVATE refused, SIGBUS beyond EOF */
    void *priv = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, g, 0);
    printf("up mmap private: %s\n", priv == MAP_FAILED ? res(-1) : "ok");
    char *m = mmap(NULL, 2 * GSIZE, PROT_READ | PROT_WRITE, MAP_SHARED, g, 0);
    printf("up mmap shared: %s\n", m == MAP_FAILED ? res(-1) : "ok");
    if (m == MAP_FAILED)
        return 3;
    memcpy(m + 2 * PG, "hello", 6);
    printf("up write+pread through backing: %s\n", strcmp(m + 2 * PG, "hello") == 0 ? "ok" : "mismatch");
    printf("up sigbus in file: %d\n", sigbus_read(m + 5 * PG));
    printf("up sigbus beyond eof: %d\n", sigbus_read(m + GSIZE + PG));
    printf("up punch written page: %s", res(fallocate(g, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 2 * PG, PG)));
    printf(" zero after %d\n", m[2 * PG] == 0);
    memcpy(m + 3 * PG, "again", 6);

    /* memslots */
    struct kvm_userspace_memory_region2 r = {
        .slot = 0, .flags = KVM_MEM_GUEST_MEMFD, .guest_phys_addr = 0, .memory_size = GSIZE,
        .userspace_addr = (uintptr_t)m, .guest_memfd_offset = 0, .guest_memfd = (uint32_t)g};
    printf("up memslot gmem: %s\n", res(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r)));
    struct kvm_userspace_memory_region2 r2 = r;
    r2.slot = 1;
    r2.guest_phys_addr = 1ull << 32;
    r2.guest_memfd_offset = 1;
    printf("up memslot unaligned offset: %s\n", res(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r2)));
    r2.guest_memfd_offset = 0;
    r2.guest_memfd = (uint32_t)kvm;
    printf("up memslot not a gmem fd: %s\n", res(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r2)));
    r2.guest_memfd = (uint32_t)g;
    printf("up memslot overlapping binding: %s\n", res(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r2)));
    r.memory_size = 0;
    printf("up memslot delete: %s\n", res(ioctl(vm, KVM_SET_USER_MEMORY_REGION2, &r)));
    struct kvm_memory_attributes ma = {.address = 0, .size = PG, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE};
    printf("up attributes on default vm: %s\n", res(ioctl(vm, KVM_SET_MEMORY_ATTRIBUTES, &ma)));

    /* vCPU and kvm_run */
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    printf("up create vcpu: %s\n", res(vcpu));
    if (vcpu >= 0) {
        char *run = mmap(NULL, vcpu_size + PG, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
        printf("up mmap kvm_run: %s", run == MAP_FAILED ? res(-1) : "ok");
        if (run != MAP_FAILED) {
            printf(" sigbus past size %d\n", sigbus_read(run + vcpu_size));
            munmap(run, vcpu_size + PG);
        } else {
            printf("\n");
        }
        /* F_GETFL: /dev/kvm as opened (O_LARGEFILE on 64-bit), VM and vCPU O_RDWR
         * (anon_inode_getfd), guest_memfd O_RDWR|O_LARGEFILE (__kvm_gmem_create) */
        printf("up F_GETFL kvm %#x vm %#x vcpu %#x gmem %#x\n", fcntl(kvm, F_GETFL),
               fcntl(vm, F_GETFL), fcntl(vcpu, F_GETFL), fcntl(g, F_GETFL));
        /* MAP_ANONYMOUS never looks at the fd (ksys_mmap_pgoff): anonymous memory, not
         * kvm_run (64 pages, PROT_EXEC: neither would map the vCPU file) */
        char *an = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE | PROT_EXEC,
                        MAP_SHARED | MAP_ANONYMOUS, vcpu, 0);
        printf("up mmap anonymous with a vcpu fd: %s", an == MAP_FAILED ? res(-1) : "ok");
        if (an != MAP_FAILED) {
            an[63 * PG] = 7;
            printf(" page 63 %d sigbus %d\n", an[63 * PG], sigbus_read(an + 62 * PG));
            munmap(an, 64 * PG);
        } else {
            printf("\n");
        }
    }

    /* SW_PROTECTED VM: private memory attributes */
    int types = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_VM_TYPES);
    if (types > 0 && (types & (1 << KVM_X86_SW_PROTECTED_VM))) {
        int pvm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
        printf("up create sw_protected vm: %s\n", res(pvm));
        int pg = create_gmem(pvm, GSIZE, 0);
        printf("up sw_protected gmem: %s\n", res(pg));
        printf("up sw_protected gmem mmap flag: %s\n", res(create_gmem(pvm, GSIZE, GUEST_MEMFD_FLAG_MMAP)));
        ma.address = 0;
        printf("up set private: %s\n", res(ioctl(pvm, KVM_SET_MEMORY_ATTRIBUTES, &ma)));
        ma.address = 1;
        printf("up set private unaligned: %s\n", res(ioctl(pvm, KVM_SET_MEMORY_ATTRIBUTES, &ma)));
        ma.address = 0;
        ma.attributes = 1;
        printf("up set bad attribute: %s\n", res(ioctl(pvm, KVM_SET_MEMORY_ATTRIBUTES, &ma)));
        close(pg);
        close(pvm);
    } else {
        printf("up sw_protected: no\n");
    }

    /* in-place conversion (gmem-attributes-v8: KVM_SET_MEMORY_ATTRIBUTES2 on the gmem fd) */
    if (ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD_MEMORY_ATTRIBUTES) > 0 && types > 0 &&
        (types & (1 << KVM_X86_SW_PROTECTED_VM))) {
        int cvm = ioctl(kvm, KVM_CREATE_VM, KVM_X86_SW_PROTECTED_VM);
        int cg = create_gmem(cvm, GSIZE, gflags);
        printf("ext inplace gmem: %s\n", res(cg));
        char *c = mmap(NULL, GSIZE, PROT_READ | PROT_WRITE, MAP_SHARED, cg, 0);
        printf("ext inplace mmap: %s\n", c == MAP_FAILED ? res(-1) : "ok");
        c[PG] = 'x';
        struct kvm_memory_attributes2 a2 = {.offset = PG, .size = PG, .attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE};
        printf("ext to private: %s\n", res(ioctl(cg, KVM_SET_MEMORY_ATTRIBUTES2, &a2)));
        printf("ext sigbus on private: %d neighbour %d\n", sigbus_read(c + PG), sigbus_read(c + 2 * PG));
        a2.attributes = 0;
        printf("ext to shared: %s\n", res(ioctl(cg, KVM_SET_MEMORY_ATTRIBUTES2, &a2)));
        printf("ext sigbus after shared: %d\n", sigbus_read(c + PG));
        a2.offset = 3;
        printf("ext unaligned: %s\n", res(ioctl(cg, KVM_SET_MEMORY_ATTRIBUTES2, &a2)));
        /* anonymous memory MAP_FIXED over the converted page: a later conversion of
         * that page must leave the new mapping alone */
        char *anon = mmap(c + PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        anon[0] = 'a';
        a2.offset = PG;
        a2.attributes = KVM_MEMORY_ATTRIBUTE_PRIVATE;
        printf("ext to private under map_fixed: %s", res(ioctl(cg, KVM_SET_MEMORY_ATTRIBUTES2, &a2)));
        printf(" sigbus %d kept %d\n", sigbus_read(c + PG), c[PG] == 'a');
        /* four threads convert their own page concurrently; the VMM's mapping ends up in
         * the final state of each page, whichever thread's reply carried the orders */
        pthread_t ct[4];
        struct conv_arg ca[4];
        for (int i = 0; i < 4; i++) {
            ca[i] = (struct conv_arg){cg, i};
            pthread_create(&ct[i], NULL, convert_body, &ca[i]);
        }
        long conv_ok = 0;
        for (int i = 0; i < 4; i++) {
            void *rv;
            pthread_join(ct[i], &rv);
            conv_ok += (long)rv;
        }
        printf("ext threaded conversions: %ld/160 sigbus %d%d%d%d\n", conv_ok, sigbus_read(c + 8 * PG),
               sigbus_read(c + 9 * PG), sigbus_read(c + 10 * PG), sigbus_read(c + 11 * PG));
        munmap(c, GSIZE);
        close(cg);
        close(cvm);
    } else {
        printf("ext inplace: skip\n");
    }

    /* iommufd: IOAS_MAP_FILE of a memfd, VFIO cdev attach */
    int iommu = open("/dev/iommu", O_RDWR | O_CLOEXEC);
    if (iommu >= 0) {
        struct iommu_ioas_alloc al = {.size = sizeof al};
        printf("ext ioas alloc: %s\n", res(ioctl(iommu, IOMMU_IOAS_ALLOC, &al)));
        int mfd = memfd_create("dma", MFD_CLOEXEC);
        ftruncate(mfd, GSIZE);
        struct iommu_ioas_map_file mf = {.size = sizeof mf, .ioas_id = al.out_ioas_id, .fd = mfd,
            .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE | IOMMU_IOAS_MAP_WRITEABLE,
            .start = 0, .length = GSIZE, .iova = 1ull << 30};
        printf("ext map_file memfd: %s\n", res(ioctl(iommu, IOMMU_IOAS_MAP_FILE, &mf)));
        mf.fd = g;
        mf.iova = 1ull << 31;
        printf("ext map_file gmem: %s\n", res(ioctl(iommu, IOMMU_IOAS_MAP_FILE, &mf)));
        int dev = open("/dev/vfio/devices/vfio0", O_RDWR | O_CLOEXEC);
        if (dev >= 0) {
            struct vfio_device_bind_iommufd b = {.argsz = sizeof b, .iommufd = iommu};
            printf("ext vfio bind: %s\n", res(ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &b)));
            struct vfio_device_attach_iommufd_pt at = {.argsz = sizeof at, .pt_id = al.out_ioas_id};
            printf("ext vfio attach: %s\n", res(ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &at)));
            close(dev);
        } else {
            printf("ext vfio: skip\n");
        }
        close(mfd);
        close(iommu);
    } else {
        printf("ext iommufd: skip\n");
    }

    /* threads: guest_memfds created, mapped, punched and closed concurrently */
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, thread_body, &vm);
    long total = 0;
    for (int i = 0; i < 4; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        total += (intptr_t)rv;
    }
    printf("up threads: %ld/200\n", total);

    /* fork: the child inherits the fds; VM ioctls from another mm fail with EIO */
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        printf("up fork child kvm ioctl: %d\n", ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD));
        printf("up fork child vm ioctl: %s\n", res(ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_GUEST_MEMFD)));
        printf("up fork child gmem punch: %s\n", res(fallocate(g, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, PG)));
        fflush(stdout);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    printf("up fork child exit: %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);

    printf("up still mapped: %s\n", strcmp(m + 3 * PG, "again") == 0 ? "ok" : "lost");
    munmap(m, 2 * GSIZE);
    close(g);
    close(vm);
    close(kvm);
    printf("done\n");
    return 0;
}
