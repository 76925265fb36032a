/* The binary stats fds from native code (tests/native/test_stats_native.py).
 *
 * Reads the VM and vCPU stats files as a VMM (or the selftests' kvm_util) does: the
 * header at offset 0, the id string, the descriptors, the data; then the position rules
 * of read/lseek and the errno of the calls the stats fops do not offer. Every line starts
 * with "up " and must be identical on the real /dev/kvm and under `kmock run --profile
 * host`. The id string is printed with the pid replaced by "<pid>" (checked against
 * getpid()); no fd numbers or addresses are printed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "native.h"

#define KVMIO 0xAE
#define KVM_CREATE_VM _IO(KVMIO, 0x01)
#define KVM_CHECK_EXTENSION _IO(KVMIO, 0x03)
#define KVM_CREATE_VCPU _IO(KVMIO, 0x41)
#define KVM_GET_STATS_FD _IO(KVMIO, 0xce)
#define KVM_CAP_BINARY_STATS_FD 203

struct kvm_stats_header { uint32_t flags, name_size, num_desc, id_offset, desc_offset, data_offset; };
struct kvm_stats_desc { uint32_t flags; int16_t exponent; uint16_t size; uint32_t offset, bucket_size; char name[]; };


/* the whole stats file of `fd` as kvm_util reads it: header, id, descriptors, data */
static void dump(const char *what, int fd, const char *id_format, int vcpu_id)
{
    struct kvm_stats_header h;
    ssize_t n = pread(fd, &h, sizeof h, 0);
    printf("up %s header read: %zd\n", what, n);
    printf("up %s header: flags %u name_size %u num_desc %u id %u desc %u data %u\n", what, h.flags,
           h.name_size, h.num_desc, h.id_offset, h.desc_offset, h.data_offset);
    char *id = calloc(1, h.name_size + 1);
    n = pread(fd, id, h.name_size, h.id_offset);
    char want[64];
    snprintf(want, sizeof want, id_format, (int)getpid(), vcpu_id);
    printf("up %s id: read %zd is-format %d\n", what, n, strcmp(id, want) == 0);
    size_t dsz = sizeof(struct kvm_stats_desc) + h.name_size;
    char *descs = malloc(dsz * h.num_desc);
    n = pread(fd, descs, dsz * h.num_desc, h.desc_offset);
    printf("up %s descriptors read: %zd\n", what, n);
    size_t end = 0;
    for (uint32_t i = 0; i < h.num_desc; i++) {
        struct kvm_stats_desc *d = (void *)(descs + i * dsz);
        printf("up %s desc %u: %s flags %#x exp %d size %u offset %u bucket %u\n", what, i, d->name,
               d->flags, d->exponent, d->size, d->offset, d->bucket_size);
        if (d->offset + 8u * d->size > end)
            end = d->offset + 8u * d->size;
    }
    uint64_t *data = calloc(1, end + 8);
    n = pread(fd, data, end + 8, h.data_offset);
    int nonzero = 0;
    for (size_t i = 0; i < end / 8; i++)
        nonzero += data[i] != 0;
    printf("up %s data read (asked %zu): %zd nonzero %d\n", what, end + 8, n, nonzero);
    free(data);
    free(descs);
    free(id);
}

/* a vCPU created by another thread: its id string names that thread (task_pid_nr(current)
 * in kvm_vcpu_init), not the process */
struct thread_vcpu { int vm, fd; pid_t tid; };
static void *create_in_thread(void *p)
{
    struct thread_vcpu *t = p;
    t->tid = (pid_t)syscall(SYS_gettid);
    t->fd = ioctl(t->vm, KVM_CREATE_VCPU, 5);
    return NULL;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    printf("up open /dev/kvm: %s\n", res(kvm < 0 ? -1 : 0));
    if (kvm < 0)
        return 1;
    printf("up cap binary stats: %d\n", ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_BINARY_STATS_FD));
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    printf("up create vm: %s\n", res(vm < 0 ? -1 : 0));
    int vs = ioctl(vm, KVM_GET_STATS_FD, 0);
    printf("up vm stats fd: %s cloexec %d flags %#x\n", res(vs < 0 ? -1 : 0),
           fcntl(vs, F_GETFD) & FD_CLOEXEC, fcntl(vs, F_GETFL) & O_ACCMODE);
    dump("vm", vs, "kvm-%d", 0);
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 2);
    int cs = ioctl(vcpu, KVM_GET_STATS_FD, 0);
    printf("up vcpu stats fd: %s\n", res(cs < 0 ? -1 : 0));
    dump("vcpu", cs, "kvm-%d/vcpu-%d", 2);

    struct thread_vcpu tv = {.vm = vm};
    pthread_t th;
    pthread_create(&th, NULL, create_in_thread, &tv);
    pthread_join(th, NULL);
    int ts = ioctl(tv.fd, KVM_GET_STATS_FD, 0);
    char tid_id[64] = "", want_tid[64];
    pread(ts, tid_id, 48, 24);
    snprintf(want_tid, sizeof want_tid, "kvm-%d/vcpu-5", (int)tv.tid);
    printf("up vcpu created by another thread: id names that thread %d, not the process %d\n",
           strcmp(tid_id, want_tid) == 0, tv.tid != getpid());
    close(ts);
    close(tv.fd);

    /* read moves f_pos; noop_llseek answers it and moves nothing */
    char buf[64];
    printf("up read 24: %s\n", res(read(vs, buf, 24)));
    printf("up lseek 0 SEEK_SET: %s\n", res(lseek(vs, 0, SEEK_SET)));
    printf("up lseek -5 SEEK_END: %s\n", res(lseek(vs, -5, SEEK_END)));
    printf("up lseek whence 9: %s\n", res(lseek(vs, 0, 9)));
    printf("up read 8: %s %.3s\n", res(read(vs, buf, 8)), buf);
    int d = dup(vs);
    printf("up read 4 via dup: %s\n", res(read(d, buf, 4)));
    printf("up lseek 0 SEEK_CUR: %s\n", res(lseek(vs, 0, SEEK_CUR)));
    printf("up pread at 1<<40: %s\n", res(pread(vs, buf, 8, 1LL << 40)));
    printf("up pread at -1: %s\n", res(pread(vs, buf, 8, -1)));
    printf("up write: %s\n", res(write(vs, "x", 1)));
    printf("up pwrite: %s\n", res(pwrite(vs, "x", 1, 0)));
    printf("up ioctl: %s\n", res(ioctl(vs, KVM_GET_STATS_FD, 0)));
    void *p = mmap(NULL, 4096, PROT_READ, MAP_SHARED, vs, 0);
    printf("up mmap: %s\n", res(p == MAP_FAILED ? -1 : 0));
    printf("up fallocate: %s\n", res(fallocate(vs, 0, 0, 4096)));
    printf("up ftruncate: %s\n", res(ftruncate(vs, 0)));
    printf("up fsync: %s\n", res(fsync(vs)));
    struct stat st;
    int r = fstat(vs, &st);
    printf("up fstat: %s mode %o size %lld\n", res(r), st.st_mode, (long long)st.st_size);

    /* the stats fds keep the VM: they read after the VM and vCPU fds are closed */
    close(vcpu);
    close(vm);
    struct kvm_stats_header h;
    printf("up vcpu stats after close: %s\n", res(pread(cs, &h, sizeof h, 0)));
    printf("up vm stats after close: %s\n", res(pread(vs, &h, sizeof h, 0)));
    close(d);
    close(cs);
    close(vs);
    close(kvm);
    printf("done\n");
    return 0;
}
