/* kmock_preload: route a native VMM's calls on kmock's devices to a `kmock serve` server.
 *
 * LD_PRELOAD=kmock_preload.so KMOCK_SOCKET=/path/to/socket ./vmm
 *
 * The library interposes the libc calls a VMM makes on /dev/kvm, /dev/iommu,
 * /dev/vfio/devices/vfioN and plugin devices (/dev/sev ...) and on the fds they produce.
 * Every other call goes straight to libc after one byte-load from an fd bitmap.
 *
 * - A kmock fd is a real fd of this process, a placeholder chosen as kmock/fdtable.py
 *   does so that fcntl(F_GETFL) gives the kernel's answer and a raw syscall on it fails
 *   harmlessly: /dev/null opened with the open's flags for a device, a dup of one
 *   /dev/null opened O_RDWR for a guest_memfd (O_RDWR|O_LARGEFILE), /dev/null O_RDONLY
 *   for a stats fd, a new epoll fd (an anon_inode file, O_RDWR) for VM, vCPU and other
 *   fds. The server keeps (client fd -> its own fd).
 * - Pointer arguments are not marshalled here: the server reads and writes this
 *   process's memory with process_vm_readv/writev, as the kernel's copy_from_user.
 * - mmap with MAP_ANONYMOUS never looks at the fd (ksys_mmap_pgoff): libc's, always.
 * - mmap of a kmock fd maps the real memfd the server passes (SCM_RIGHTS): guest_memfd
 *   backing or kvm_run. Pages a host access must not reach are mapped onto a
 *   zero-length memfd, so they SIGBUS in this process as in the real kernel.
 * - Replies carry remap orders (the server's guest_memfd notifier): this process
 *   applies them before the call returns, since only it can change its address space.
 * - One connection per thread (SOCK_SEQPACKET), so vCPU threads never wait on a lock;
 *   once set up, its requests and replies go through a shared memory channel with a
 *   bounded spin on each side (kmock_chan.h), so a call needs no context switch when
 *   the server is awake on another CPU.
 *
 * The wire format is described in kmock/preload/protocol.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "kmock_chan.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif

enum {
    OP_HELLO = 1, OP_OPEN, OP_CLOSE, OP_DUP, OP_IOCTL, OP_BIND, OP_MMAP, OP_MUNMAP,
    OP_FALLOCATE, OP_READ, OP_WRITE, OP_LSEEK, OP_FSTAT, OP_FTRUNCATE, OP_MADVISE,
    OP_DUMP, OP_CHANNEL,
};
#define RF_NEWFD 1u /* reply: x = a new server fd, y = its FD_CLOEXEC */
#define RF_PASS 2u  /* reply to OPEN: not a kmock device, open it for real */
#define RF_FILE 4u  /* reply to OPEN: a file served by content (payload) */
#define RF_SOCKFD 8u /* channel reply: its fd waits on the socket (a one-byte message) */

struct req { uint32_t op; int32_t fd; int64_t a, b, c, d; uint32_t len, pad; }; /* pad: the thread's id */
struct rep { int64_t ret; int32_t err; uint32_t nops; uint32_t len; uint32_t flags; int64_t x, y; };
struct remap_op { int64_t map_id, page, npages; int32_t fault; uint32_t seq; };
_Static_assert(sizeof(struct req) == 48, "req");
_Static_assert(sizeof(struct rep) == 40, "rep");
_Static_assert(sizeof(struct remap_op) == 32, "op");

#define MAXFD 65536
#define MAXMAPS 1024

/* ---- the real libc ---------------------------------------------------------------- */

#define DECL(ret, name, ...) static ret (*real_##name)(__VA_ARGS__)
DECL(int, open, const char *, int, ...);
DECL(int, open64, const char *, int, ...);
DECL(int, openat, int, const char *, int, ...);
DECL(int, openat64, int, const char *, int, ...);
DECL(int, close, int);
DECL(int, dup, int);
DECL(int, dup2, int, int);
DECL(int, dup3, int, int, int);
DECL(int, ioctl, int, unsigned long, ...);
DECL(void *, mmap, void *, size_t, int, int, int, off_t);
DECL(void *, mmap64, void *, size_t, int, int, int, off64_t);
DECL(int, munmap, void *, size_t);
DECL(int, fallocate, int, int, off_t, off_t);
DECL(int, fallocate64, int, int, off64_t, off64_t);
DECL(int, posix_fallocate, int, off_t, off_t);
DECL(int, posix_fallocate64, int, off64_t, off64_t);
DECL(ssize_t, read, int, void *, size_t);
DECL(ssize_t, write, int, const void *, size_t);
DECL(ssize_t, pread, int, void *, size_t, off_t);
DECL(ssize_t, pread64, int, void *, size_t, off64_t);
DECL(ssize_t, pwrite, int, const void *, size_t, off_t);
DECL(ssize_t, pwrite64, int, const void *, size_t, off64_t);
DECL(off_t, lseek, int, off_t, int);
DECL(off64_t, lseek64, int, off64_t, int);
DECL(int, fstat, int, struct stat *);
DECL(int, fstat64, int, struct stat64 *);
DECL(int, fstatat, int, const char *, struct stat *, int);
DECL(int, fstatat64, int, const char *, struct stat64 *, int);
DECL(int, __fxstat, int, int, struct stat *);
DECL(int, __fxstat64, int, int, struct stat64 *);
DECL(int, statx, int, const char *, int, unsigned int, struct statx *);
DECL(int, ftruncate, int, off_t);
DECL(int, ftruncate64, int, off64_t);
DECL(int, fcntl, int, int, ...);
DECL(int, fcntl64, int, int, ...);
DECL(int, madvise, void *, size_t, int);

#define REAL(name) (real_##name ? real_##name : (resolve(), real_##name))
#define R(name) real_##name = dlsym(RTLD_NEXT, #name)

static void resolve(void)
{
    R(open); R(open64); R(openat); R(openat64); R(close); R(dup); R(dup2); R(dup3);
    R(ioctl); R(mmap); R(mmap64); R(munmap); R(fallocate); R(fallocate64);
    R(posix_fallocate); R(posix_fallocate64); R(read); R(write); R(pread); R(pread64);
    R(pwrite); R(pwrite64); R(lseek); R(lseek64); R(fstat); R(fstat64); R(fstatat);
    R(fstatat64); R(__fxstat); R(__fxstat64); R(statx); R(ftruncate); R(ftruncate64);
    R(fcntl); R(fcntl64); R(madvise);
}

/* ---- state ------------------------------------------------------------------------- */

static unsigned char kfd[MAXFD];  /* 1: a kmock fd */
static int nmaps;                 /* live entries of maps[] (fast path of munmap) */
/* the VMM's mappings of kmock files; a slot is in use while id != 0 (server ids start at 1) */
static struct cmap { int64_t id; uintptr_t base, lo, hi; int prot, src; int64_t off; } maps[MAXMAPS];
static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ops_cond = PTHREAD_COND_INITIALIZER;
static uint32_t ops_applied;      /* seq of the last remap order applied */
static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static char devices[8192];        /* NUL-separated device paths, from HELLO */
static int hello_done, placeholder = -1, sigbus_fd = -1;
static pid_t server_pid, forked_from;
static pthread_key_t conn_key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static __thread int conn = -1;
static __thread uint32_t conn_tid; /* this thread's id (gettid), sent in every request */
static __thread char *rbuf;      /* the reply: a malloc'd buffer, or chan->data */
static __thread struct chan *chan; /* this thread's shared channel (NULL: the socket) */
static __thread long chan_spin;    /* how long to spin for a reply, in ns (the server's) */
static __thread uint32_t chan_skip, chan_backoff; /* adaptive spinning (spin_wait) */

static inline int is_kfd(int fd)
{
    return (unsigned)fd < MAXFD && __atomic_load_n(&kfd[fd], __ATOMIC_RELAXED);
}

static inline void set_kfd(int fd, int v)
{
    if ((unsigned)fd < MAXFD)
        __atomic_store_n(&kfd[fd], (unsigned char)v, __ATOMIC_RELEASE);
}

static void chan_drop(int closing)
{
    if (!chan)
        return;
    if (closing) {
        __atomic_store_n(&chan->state, CH_CLOSED, __ATOMIC_SEQ_CST);
        chan_wake(chan);
    }
    syscall(SYS_munmap, chan, sizeof *chan);
    chan = NULL;
    rbuf = NULL;
}

static void conn_gone(void *p)
{
    (void)p;
    chan_drop(1);
    if (conn >= 0)
        syscall(SYS_close, conn);
    conn = -1;
}

static void make_key(void) { pthread_key_create(&conn_key, conn_gone); }

static void after_fork_child(void)
{
    /* the socket belongs to the parent's conversation; the child starts its own
     * (the server copies the parent's fd table for it, see HELLO) */
    chan_drop(0);
    if (conn >= 0)
        syscall(SYS_close, conn);
    conn = -1;
    forked_from = getppid();
    hello_done = 0;
    ops_applied = 0; /* the server numbers the child's orders afresh */
    pthread_mutex_init(&init_lock, NULL);
    pthread_mutex_init(&maps_lock, NULL);
    pthread_cond_init(&ops_cond, NULL);
}

__attribute__((constructor)) static void kmock_preload_init(void)
{
    resolve();
    pthread_atfork(NULL, NULL, after_fork_child);
}

/* ---- one round trip ---------------------------------------------------------------- */

static void apply_ops(const struct remap_op *ops, uint32_t n)
{
    pthread_mutex_lock(&maps_lock);
    for (uint32_t i = 0; i < n; i++) {
        /* orders of one process arrive on any of its threads' connections: apply them in
         * the server's order (the thread holding the previous ones applies them at once) */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 2; /* an order lost with a dying thread's reply must not hang us */
        while (ops[i].seq != (uint32_t)(ops_applied + 1) &&
               (int32_t)(ops[i].seq - ops_applied) > 0)
            if (pthread_cond_timedwait(&ops_cond, &maps_lock, &until) == ETIMEDOUT)
                break;
        if ((int32_t)(ops[i].seq - ops_applied) > 0)
            ops_applied = ops[i].seq;
        pthread_cond_broadcast(&ops_cond);
        for (int j = 0; j < MAXMAPS; j++) {
            struct cmap *m = &maps[j];
            if (m->id != ops[i].map_id || !m->id)
                continue;
            uintptr_t s = m->base + (uintptr_t)ops[i].page * PG;
            uintptr_t e = s + (uintptr_t)ops[i].npages * PG;
            if (s < m->lo) s = m->lo;
            if (e > m->hi) e = m->hi;
            if (s < e) {
                int64_t off = m->off + (int64_t)(s - m->base);
                REAL(mmap)((void *)s, e - s, m->prot, MAP_SHARED | MAP_FIXED,
                           ops[i].fault ? sigbus_fd : m->src, off);
            }
        }
    }
    pthread_mutex_unlock(&maps_lock);
}

static int connect_server(void);
static void forget_range(uintptr_t s, size_t len, int64_t keep_id);

/* Receive one message of at most ``size`` bytes from the socket into ``buf``; a passed fd
 * goes to ``fd_out`` (or is closed). Returns the message's length or -1. */
static ssize_t recv_reply(void *buf, size_t size, int *fd_out)
{
    union { char b[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } cm;
    struct iovec riov = {buf, size};
    struct msghdr rh = {.msg_iov = &riov, .msg_iovlen = 1, .msg_control = cm.b,
                        .msg_controllen = sizeof cm.b};
    ssize_t n;
    do n = recvmsg(conn, &rh, MSG_CMSG_CLOEXEC); while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&rh); c; c = CMSG_NXTHDR(&rh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int got;
            memcpy(&got, CMSG_DATA(c), sizeof got);
            if (fd_out)
                *fd_out = got;
            else
                syscall(SYS_close, got);
        }
    }
    return n;
}

/* One round trip through the shared channel (see struct chan); 0 or -1. */
static int chan_call(const struct req *q, const void *pay, uint32_t len, int *fd_out)
{
    memcpy(chan->data, q, sizeof *q);
    if (len)
        memcpy(chan->data + sizeof *q, pay, len);
    __atomic_store_n(&chan->cli_cpu, sched_getcpu(), __ATOMIC_RELAXED);
    __atomic_store_n(&chan->state, CH_REQ, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&chan->srv_sleep, __ATOMIC_SEQ_CST))
        chan_wake(chan);
    uint32_t x = spin_wait(&chan->state, CH_REQ, chan_spin, &chan->srv_cpu, &chan_skip,
                           &chan_backoff);
    while (x == CH_REQ) {
        __atomic_store_n(&chan->cli_sleep, 1, __ATOMIC_SEQ_CST);
        struct timespec to = {0, CHAN_CHECK_NS};
        long rc = futex(&chan->state, FUTEX_WAIT, CH_REQ, &to);
        int e = errno;
        __atomic_store_n(&chan->cli_sleep, 0, __ATOMIC_SEQ_CST);
        x = __atomic_load_n(&chan->state, __ATOMIC_ACQUIRE);
        if (x == CH_REQ && rc < 0 && e == ETIMEDOUT && peer_gone(conn))
            return -1;
    }
    if (x != CH_REP)
        return -1;
    if (((struct rep *)chan->data)->flags & RF_SOCKFD) {
        char b;
        if (recv_reply(&b, 1, fd_out) < 0)
            return -1;
    }
    return 0;
}

/* Send one request, wait for its reply. Returns the reply (in the thread's buffer) or
 * NULL with errno set. ``fd_out`` receives a passed fd (or -1). */
static struct rep *call(struct req *q, const void *pay, uint32_t len, int *fd_out)
{
    if (fd_out)
        *fd_out = -1;
    if (conn < 0 && connect_server() < 0)
        return NULL;
    q->len = len;
    q->pad = conn_tid;
    if (chan) {
        if (chan_call(q, pay, len, fd_out) < 0) {
            errno = EIO;
            return NULL;
        }
    } else {
        struct iovec iov[2] = {{q, sizeof *q}, {(void *)pay, len}};
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = len ? 2 : 1};
        ssize_t n;
        do n = sendmsg(conn, &mh, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
        if (n < 0 || recv_reply(rbuf, BUFSZ, fd_out) < (ssize_t)sizeof(struct rep)) {
            errno = EIO;
            return NULL;
        }
    }
    struct rep *r = (struct rep *)rbuf;
    if (r->nops)
        apply_ops((const struct remap_op *)(rbuf + sizeof *r), r->nops);
    return r;
}

static inline const char *payload(struct rep *r)
{
    return rbuf + sizeof *r + (size_t)r->nops * sizeof(struct remap_op);
}

/* Ask for this connection's shared channel (struct chan); without one (an older
 * server, no memory) the thread stays on the socket. */
static void open_channel(void)
{
    struct req q = {.op = OP_CHANNEL};
    int fd;
    struct rep *r = call(&q, NULL, 0, &fd);
    if (!r || r->err || fd < 0) {
        if (fd >= 0)
            syscall(SYS_close, fd);
        return;
    }
    long spin = (long)r->x;
    void *p = REAL(mmap)(NULL, sizeof(struct chan), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    syscall(SYS_close, fd);
    if (p == MAP_FAILED)
        return;
    free(rbuf);
    chan = p;
    rbuf = chan->data;
    chan_spin = spin;
}

static int connect_server(void)
{
    const char *path = getenv("KMOCK_SOCKET");
    if (!path || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        errno = ENOENT;
        return -1;
    }
    if (!rbuf && !(rbuf = malloc(BUFSZ))) {
        errno = ENOMEM;
        return -1;
    }
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, path);
    if (connect(s, (struct sockaddr *)&sa, sizeof sa) < 0) {
        syscall(SYS_close, s);
        errno = ENOENT;
        return -1;
    }
    pthread_once(&key_once, make_key);
    conn = s;
    conn_tid = (uint32_t)syscall(SYS_gettid);
    pthread_setspecific(conn_key, (void *)1);
    pthread_mutex_lock(&init_lock);
    if (!hello_done) {
        struct req q = {.op = OP_HELLO, .a = forked_from};
        struct rep *r = call(&q, NULL, 0, NULL);
        if (!r) {
            pthread_mutex_unlock(&init_lock);
            return -1;
        }
        server_pid = (pid_t)r->ret;
        size_t n = r->len < sizeof devices - 2 ? r->len : sizeof devices - 2;
        memcpy(devices, payload(r), n);
        devices[n] = devices[n + 1] = 0;
        /* Yama: let the server's process_vm_readv reach us, as ptrace would */
        prctl(PR_SET_PTRACER, (unsigned long)server_pid, 0, 0, 0);
        if (placeholder < 0)
            placeholder = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDWR | O_CLOEXEC);
        if (sigbus_fd < 0)
            sigbus_fd = (int)syscall(SYS_memfd_create, "kmock-sigbus", MFD_CLOEXEC);
        hello_done = 1;
        forked_from = 0;
    }
    pthread_mutex_unlock(&init_lock);
    open_channel();
    return 0;
}

/* kmock's well-known device nodes: with KMOCK_SOCKET set and no server to reach, opening
 * one fails (ENOENT) rather than silently reaching the real device */
static int well_known(const char *p)
{
    return !strcmp(p, "/dev/kvm") || !strcmp(p, "/dev/iommu") || !strcmp(p, "/dev/sev") ||
           !strncmp(p, "/dev/vfio/devices/", 18);
}

/* 1: a path kmock serves; 0: not kmock's; -1: kmock's, but the server is unreachable */
static int kmock_path(const char *p)
{
    if (!p || p[0] != '/' || (strncmp(p, "/dev/", 5) != 0 && strncmp(p, "/sys/module/kvm", 15) != 0))
        return 0;
    if (!getenv("KMOCK_SOCKET"))
        return 0;
    if ((!hello_done || conn < 0) && connect_server() < 0) {
        if (!well_known(p))
            return 0;
        static int warned;
        if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            fprintf(stderr, "kmock_preload: no kmock server at KMOCK_SOCKET=%s: %s fails\n",
                    getenv("KMOCK_SOCKET"), p);
        return -1;
    }
    if (strncmp(p, "/dev/vfio/devices/", 18) == 0)
        return 1;
    for (const char *d = devices; *d; d += strlen(d) + 1)
        if (strcmp(d, p) == 0)
            return 1;
    return 0;
}

static int fail(int e)
{
    errno = e;
    return -1;
}

static int ret_of(struct rep *r)
{
    if (!r)
        return -1;
    if (r->err)
        return fail(r->err);
    return (int)r->ret;
}

/* tell the server that local fd ``fd`` now names a kmock file (request ``q``): on
 * success ``fd`` is a kmock fd; on failure it is closed and the server's errno set */
static int announce(struct req *q, int fd)
{
    struct rep *r = call(q, NULL, 0, NULL);
    if (!r || r->err) {
        int e = r ? r->err : EIO;
        REAL(close)(fd);
        return fail(e);
    }
    set_kfd(fd, 1);
    return fd;
}

/* the placeholder kinds (kmock/fdtable.py) */
enum { PH_ANON, PH_GMEM, PH_RDONLY };
#define KVM_CREATE_GUEST_MEMFD_REQ 0xc040aed4ul /* _IOWR(KVMIO, 0xd4, 64 bytes) */
#define KVM_GET_STATS_FD_REQ 0xaeceul           /* _IO(KVMIO, 0xce) */

static int ph_kind(unsigned long request)
{
    return request == KVM_CREATE_GUEST_MEMFD_REQ ? PH_GMEM
           : request == KVM_GET_STATS_FD_REQ     ? PH_RDONLY
                                                 : PH_ANON;
}

/* a new placeholder fd of ``kind`` */
static int new_placeholder(int kind, int cloexec)
{
    if (kind == PH_GMEM)
        return REAL(fcntl)(placeholder, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
    if (kind == PH_RDONLY)
        return (int)syscall(SYS_openat, AT_FDCWD, "/dev/null", O_RDONLY | (cloexec ? O_CLOEXEC : 0));
    return (int)syscall(SYS_epoll_create1, cloexec ? EPOLL_CLOEXEC : 0);
}

/* a new local fd standing for the server's fd ``sfd`` */
static int bind_new(int64_t sfd, int cloexec, int kind)
{
    int n = new_placeholder(kind, cloexec);
    if (n < 0)
        return -1;
    struct req q = {.op = OP_BIND, .fd = n, .a = sfd};
    return announce(&q, n);
}

/* ---- open and friends ---------------------------------------------------------------- */

static int kopen(const char *path, int flags, mode_t mode, int *handled)
{
    *handled = 0;
    int mine = kmock_path(path);
    if (mine == 0)
        return -1;
    if (mine < 0) {
        *handled = 1;
        return fail(ENOENT);
    }
    /* the open's access mode and status flags: F_GETFL as for the real node */
    int n = (int)syscall(SYS_openat, AT_FDCWD, "/dev/null",
                         flags & (O_ACCMODE | O_NONBLOCK | O_APPEND | O_SYNC | O_DSYNC | O_CLOEXEC));
    if (n < 0) {
        *handled = 1;
        return -1;
    }
    struct req q = {.op = OP_OPEN, .fd = n, .a = flags, .b = mode};
    struct rep *r = call(&q, path, (uint32_t)strlen(path) + 1, NULL);
    if (r && (r->flags & RF_PASS)) {
        REAL(close)(n);
        return -1;
    }
    if (r && !r->err && (r->flags & RF_FILE)) {
        /* contents the mock kernel defines (a module parameter): a memfd holding them */
        REAL(close)(n);
        *handled = 1;
        int m = (int)syscall(SYS_memfd_create, "kmock-file", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
        if (m < 0)
            return -1;
        if (REAL(write)(m, payload(r), r->len) != (ssize_t)r->len || REAL(lseek)(m, 0, SEEK_SET) < 0) {
            REAL(close)(m);
            return fail(EIO);
        }
        return m;
    }
    *handled = 1;
    if (!r || r->err) {
        int e = r ? r->err : EIO;
        REAL(close)(n);
        return fail(e);
    }
    set_kfd(n, 1);
    return n;
}

#define OPEN_BODY(realcall)                                      \
    mode_t mode = 0;                                             \
    if (flags & (O_CREAT | __O_TMPFILE)) {                       \
        va_list ap;                                              \
        va_start(ap, flags);                                     \
        mode = va_arg(ap, mode_t);                               \
        va_end(ap);                                              \
    }                                                            \
    if (path[0] == '/' && (path[1] == 'd' || path[1] == 's')) {  \
        int handled, fd = kopen(path, flags, mode, &handled);    \
        if (handled)                                             \
            return fd;                                           \
    }                                                            \
    return realcall;

int open(const char *path, int flags, ...) { OPEN_BODY(REAL(open)(path, flags, mode)) }
int open64(const char *path, int flags, ...) { OPEN_BODY(REAL(open64)(path, flags, mode)) }
int openat(int dirfd, const char *path, int flags, ...) { OPEN_BODY(REAL(openat)(dirfd, path, flags, mode)) }
int openat64(int dirfd, const char *path, int flags, ...) { OPEN_BODY(REAL(openat64)(dirfd, path, flags, mode)) }
int __open_2(const char *path, int flags) { return open(path, flags); }
int __open64_2(const char *path, int flags) { return open64(path, flags); }
int __openat_2(int dirfd, const char *path, int flags) { return openat(dirfd, path, flags); }

static int kclose_server(int fd)
{
    struct req q = {.op = OP_CLOSE, .fd = fd};
    return ret_of(call(&q, NULL, 0, NULL));
}

int close(int fd)
{
    if (is_kfd(fd)) {
        /* the server forgets the number before it is free for reuse */
        kclose_server(fd);
        set_kfd(fd, 0);
    }
    return REAL(close)(fd);
}

static int kdup_to(int oldfd, int newfd)
{
    struct req q = {.op = OP_DUP, .fd = oldfd, .a = newfd};
    return announce(&q, newfd);
}

int dup(int fd)
{
    if (!is_kfd(fd))
        return REAL(dup)(fd);
    int n = REAL(dup)(fd);
    return n < 0 ? n : kdup_to(fd, n);
}

static int kdup3(int oldfd, int newfd, int flags, int is_dup2)
{
    if (oldfd == newfd)
        return is_dup2 ? (REAL(fcntl)(oldfd, F_GETFD) < 0 ? -1 : newfd) : fail(EINVAL);
    if (is_kfd(newfd)) {
        kclose_server(newfd);
        set_kfd(newfd, 0);
    }
    int n = is_dup2 ? REAL(dup2)(oldfd, newfd) : REAL(dup3)(oldfd, newfd, flags);
    if (n < 0 || !is_kfd(oldfd))
        return n;
    return kdup_to(oldfd, n);
}

int dup2(int oldfd, int newfd)
{
    if (!is_kfd(oldfd) && !is_kfd(newfd))
        return REAL(dup2)(oldfd, newfd);
    return kdup3(oldfd, newfd, 0, 1);
}

int dup3(int oldfd, int newfd, int flags)
{
    if (!is_kfd(oldfd) && !is_kfd(newfd))
        return REAL(dup3)(oldfd, newfd, flags);
    return kdup3(oldfd, newfd, flags, 0);
}

static int kfcntl(int fd, int cmd, unsigned long arg, int is64)
{
    if (is_kfd(fd) && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
        int n = REAL(fcntl)(fd, cmd, (int)arg);
        return n < 0 ? n : kdup_to(fd, n);
    }
    return is64 && real_fcntl64 ? REAL(fcntl64)(fd, cmd, arg) : REAL(fcntl)(fd, cmd, arg);
}

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return kfcntl(fd, cmd, arg, 0);
}

int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return kfcntl(fd, cmd, arg, 1);
}

/* ---- ioctl -------------------------------------------------------------------------- */

int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (!is_kfd(fd))
        return REAL(ioctl)(fd, request, arg);
    struct req q = {.op = OP_IOCTL, .fd = fd, .a = (int64_t)request, .b = (int64_t)(uintptr_t)arg};
    struct rep *r = call(&q, NULL, 0, NULL);
    if (!r)
        return -1;
    if (r->err)
        return fail(r->err);
    if (r->flags & RF_NEWFD)
        return bind_new(r->x, (int)r->y, ph_kind(request));
    return (int)r->ret;
}

/* ---- memory ------------------------------------------------------------------------- */

static void *kmmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)
{
    struct req q = {.op = OP_MMAP, .fd = fd, .a = (int64_t)len, .b = prot, .c = flags, .d = off};
    int src;
    struct rep *r = call(&q, NULL, 0, &src);
    if (!r)
        return MAP_FAILED;
    if (r->err) {
        if (src >= 0)
            syscall(SYS_close, src);
        errno = r->err;
        return MAP_FAILED;
    }
    int64_t id = r->ret;
    uintptr_t hint = (uintptr_t)r->x;
    uint32_t nruns = r->len / 16;
    int64_t runs[2 * 256];
    if (nruns > 256)
        nruns = 256;
    memcpy(runs, payload(r), nruns * 16);
    void *p;
    int f = flags;
    if (nruns)
        f &= ~MAP_POPULATE; /* no host fault on the pages that must fault */
    if (!addr && hint && !(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE))) {
        /* the server's mapping address: IOAS_MAP user_va look-ups then agree */
        p = REAL(mmap)((void *)hint, len, prot, f | MAP_FIXED_NOREPLACE, src, off);
        if (p == MAP_FAILED)
            p = REAL(mmap)(NULL, len, prot, f, src, off);
    } else {
        p = REAL(mmap)(addr, len, prot, f, src, off);
    }
    if (p == MAP_FAILED) {
        int e = errno;
        struct req u = {.op = OP_MUNMAP, .a = id};
        call(&u, NULL, 0, NULL);
        syscall(SYS_close, src);
        errno = e;
        return MAP_FAILED;
    }
    uintptr_t base = (uintptr_t)p;
    size_t maplen = (len + PG - 1) & ~(size_t)(PG - 1);
    pthread_mutex_lock(&maps_lock);
    for (uint32_t i = 0; i < nruns; i++)
        REAL(mmap)((void *)(base + runs[2 * i] * PG), runs[2 * i + 1] * PG, prot,
                   MAP_SHARED | MAP_FIXED, sigbus_fd, off + runs[2 * i] * PG);
    int slot = -1;
    for (int j = 0; j < MAXMAPS; j++)
        if (!maps[j].id) {
            slot = j;
            break;
        }
    if (slot >= 0) {
        maps[slot] = (struct cmap){id, base, base, base + maplen, prot, src, off};
        __atomic_add_fetch(&nmaps, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&maps_lock);
    if (flags & MAP_FIXED)
        forget_range(base, maplen, id);
    return p;
}

static void *fixed_over(void *p, size_t len, int flags)
{
    /* a MAP_FIXED mapping replaced whatever kmock mapping was there */
    if (p != MAP_FAILED && (flags & MAP_FIXED) && __atomic_load_n(&nmaps, __ATOMIC_ACQUIRE))
        forget_range((uintptr_t)p, len, 0);
    return p;
}

void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (!is_kfd(fd) || (flags & MAP_ANONYMOUS))
        return fixed_over(REAL(mmap)(addr, len, prot, flags, fd, off), len, flags);
    return kmmap(addr, len, prot, flags, fd, off);
}

void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
    if (!is_kfd(fd) || (flags & MAP_ANONYMOUS))
        return fixed_over(REAL(mmap64)(addr, len, prot, flags, fd, off), len, flags);
    return kmmap(addr, len, prot, flags, fd, off);
}

/* [addr, addr + len) no longer maps what it mapped: drop or clip the records there, and
 * close the server's side of the mappings wholly gone (munmap, or a MAP_FIXED over them) */
static void forget_range(uintptr_t s, size_t len, int64_t keep_id)
{
    uintptr_t e = s + ((len + PG - 1) & ~(size_t)(PG - 1));
    int64_t gone[64];
    int srcs[64], ngone = 0;
    pthread_mutex_lock(&maps_lock);
    for (int j = 0; j < MAXMAPS && ngone < 64; j++) {
        struct cmap *m = &maps[j];
        if (!m->id || m->id == keep_id || e <= m->lo || s >= m->hi)
            continue;
        if (s <= m->lo && e >= m->hi) {
            int64_t id = m->id;
            m->id = 0;
            __atomic_sub_fetch(&nmaps, 1, __ATOMIC_RELEASE);
            int rest = 0; /* another piece of the same mapping (a hole was punched in it) */
            for (int k = 0; k < MAXMAPS; k++)
                rest |= maps[k].id == id;
            if (!rest) {
                gone[ngone] = id;
                srcs[ngone++] = m->src;
            }
        } else if (s <= m->lo) {
            m->lo = e;  /* head */
        } else if (e >= m->hi) {
            m->hi = s;  /* tail */
        } else {
            /* a hole in the middle: two pieces of one mapping (same id, memfd, base) */
            int k = 0;
            while (k < MAXMAPS && maps[k].id)
                k++;
            if (k < MAXMAPS) {
                maps[k] = *m;
                maps[k].lo = e;
                __atomic_add_fetch(&nmaps, 1, __ATOMIC_RELEASE);
            }
            m->hi = s;
        }
    }
    pthread_mutex_unlock(&maps_lock);
    for (int i = 0; i < ngone; i++) {
        struct req q = {.op = OP_MUNMAP, .a = gone[i]};
        call(&q, NULL, 0, NULL);
        syscall(SYS_close, srcs[i]);
    }
}

int munmap(void *addr, size_t len)
{
    if (!__atomic_load_n(&nmaps, __ATOMIC_ACQUIRE))
        return REAL(munmap)(addr, len);
    int rc = REAL(munmap)(addr, len);
    if (rc == 0)
        forget_range((uintptr_t)addr, len, 0);
    return rc;
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#define PMD_SZ ((uintptr_t)2 << 20)

/* MADV_COLLAPSE on a guest_memfd mapping that can hold a PMD-aligned block: guest_memfd
 * folios are never collapsed (selftests guest_memfd_test.c test_collapse: EINVAL). Probed
 * on 6.18.44: EINVAL for any range of such a mapping; the VMM's mapping under the library
 * is the backing shmem memfd, which would collapse, so it is refused here. Smaller
 * mappings pass through (shmem answers as the kernel did there). */
static int collapse_refused(uintptr_t s, size_t len)
{
    int refused = 0;
    pthread_mutex_lock(&maps_lock);
    for (int j = 0; j < MAXMAPS && !refused; j++) {
        struct cmap *m = &maps[j];
        if (!m->id || s >= m->hi || s + len <= m->lo)
            continue;
        uintptr_t lo = (m->lo + PMD_SZ - 1) & ~(PMD_SZ - 1);
        refused = lo + PMD_SZ <= m->hi;
    }
    pthread_mutex_unlock(&maps_lock);
    return refused;
}

int madvise(void *addr, size_t len, int advice)
{
    if (advice == MADV_COLLAPSE && __atomic_load_n(&nmaps, __ATOMIC_ACQUIRE) &&
        collapse_refused((uintptr_t)addr, len))
        return fail(EINVAL);
    if (advice == MADV_REMOVE && __atomic_load_n(&nmaps, __ATOMIC_ACQUIRE)) {
        /* MADV_REMOVE is the file's fallocate(PUNCH_HOLE): the server's file must see it */
        uintptr_t s = (uintptr_t)addr;
        pthread_mutex_lock(&maps_lock);
        for (int j = 0; j < MAXMAPS; j++) {
            struct cmap *m = &maps[j];
            if (m->id && s >= m->lo && s + len <= m->hi) {
                int64_t id = m->id, at = (int64_t)(s - m->base);
                pthread_mutex_unlock(&maps_lock);
                struct req q = {.op = OP_MADVISE, .a = id, .b = at, .c = (int64_t)len, .d = advice};
                return ret_of(call(&q, NULL, 0, NULL));
            }
        }
        pthread_mutex_unlock(&maps_lock);
    }
    return REAL(madvise)(addr, len, advice);
}

static ssize_t kread(int fd, void *buf, size_t n, int64_t off);

static int kfallocate(int fd, int mode, int64_t off, int64_t len)
{
    struct req q = {.op = OP_FALLOCATE, .fd = fd, .a = mode, .b = off, .c = len};
    return ret_of(call(&q, NULL, 0, NULL));
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    return is_kfd(fd) ? kfallocate(fd, mode, off, len) : REAL(fallocate)(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
    return is_kfd(fd) ? kfallocate(fd, mode, off, len) : REAL(fallocate64)(fd, mode, off, len);
}

/* glibc's posix_fallocate falls back to writing the file block by block when the
 * syscall says EOPNOTSUPP (sysdeps/posix/posix_fallocate.c); its first step, a one-byte
 * pread, is what fails on a guest_memfd (ESPIPE), so that errno is what it returns */
static int kposix_fallocate(int fd, int64_t off, int64_t len)
{
    if (kfallocate(fd, 0, off, len) == 0)
        return 0;
    if (errno != EOPNOTSUPP)
        return errno;
    char c;
    return kread(fd, &c, 1, off) < 0 ? errno : EOPNOTSUPP;
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    if (!is_kfd(fd))
        return REAL(posix_fallocate)(fd, off, len);
    return kposix_fallocate(fd, off, len);
}

int posix_fallocate64(int fd, off64_t off, off64_t len)
{
    if (!is_kfd(fd))
        return REAL(posix_fallocate64)(fd, off, len);
    return kposix_fallocate(fd, off, len);
}

/* ---- read, write, seek, stat, truncate ------------------------------------------------ */

static ssize_t kread(int fd, void *buf, size_t n, int64_t off)
{
    if (n > MAXPAY)
        n = MAXPAY;
    struct req q = {.op = OP_READ, .fd = fd, .a = (int64_t)n, .b = off};
    struct rep *r = call(&q, NULL, 0, NULL);
    if (!r)
        return -1;
    if (r->err)
        return fail(r->err);
    memcpy(buf, payload(r), r->len);
    return (ssize_t)r->len;
}

static ssize_t kwrite(int fd, const void *buf, size_t n, int64_t off)
{
    if (n > MAXPAY)
        n = MAXPAY;
    struct req q = {.op = OP_WRITE, .fd = fd, .b = off};
    struct rep *r = call(&q, buf, (uint32_t)n, NULL);
    return !r ? -1 : r->err ? fail(r->err) : (ssize_t)r->ret;
}

ssize_t read(int fd, void *b, size_t n) { return is_kfd(fd) ? kread(fd, b, n, -1) : REAL(read)(fd, b, n); }
ssize_t write(int fd, const void *b, size_t n) { return is_kfd(fd) ? kwrite(fd, b, n, -1) : REAL(write)(fd, b, n); }
/* ksys_pread64/ksys_pwrite64 refuse a negative position (EINVAL) before they look at the
 * fd; on the wire offset -1 means read/write at the file position, so it never goes there */
static ssize_t kpread(int fd, void *b, size_t n, int64_t o) { return o < 0 ? fail(EINVAL) : kread(fd, b, n, o); }
static ssize_t kpwrite(int fd, const void *b, size_t n, int64_t o) { return o < 0 ? fail(EINVAL) : kwrite(fd, b, n, o); }
ssize_t pread(int fd, void *b, size_t n, off_t o) { return is_kfd(fd) ? kpread(fd, b, n, o) : REAL(pread)(fd, b, n, o); }
ssize_t pread64(int fd, void *b, size_t n, off64_t o) { return is_kfd(fd) ? kpread(fd, b, n, o) : REAL(pread64)(fd, b, n, o); }
ssize_t pwrite(int fd, const void *b, size_t n, off_t o) { return is_kfd(fd) ? kpwrite(fd, b, n, o) : REAL(pwrite)(fd, b, n, o); }
ssize_t pwrite64(int fd, const void *b, size_t n, off64_t o) { return is_kfd(fd) ? kpwrite(fd, b, n, o) : REAL(pwrite64)(fd, b, n, o); }

static int64_t klseek(int fd, int64_t pos, int whence)
{
    struct req q = {.op = OP_LSEEK, .fd = fd, .a = pos, .b = whence};
    struct rep *r = call(&q, NULL, 0, NULL);
    return !r ? -1 : r->err ? fail(r->err) : r->ret;
}

off_t lseek(int fd, off_t pos, int whence) { return is_kfd(fd) ? klseek(fd, pos, whence) : REAL(lseek)(fd, pos, whence); }
off64_t lseek64(int fd, off64_t pos, int whence) { return is_kfd(fd) ? klseek(fd, pos, whence) : REAL(lseek64)(fd, pos, whence); }

/* the server's stat: 13 int64 (dev ino mode nlink uid gid rdev size blksize blocks atime mtime ctime in ns) */
static int kstat(int fd, int64_t v[13])
{
    struct req q = {.op = OP_FSTAT, .fd = fd};
    struct rep *r = call(&q, NULL, 0, NULL);
    if (!r)
        return -1;
    if (r->err)
        return fail(r->err);
    memcpy(v, payload(r), 13 * 8);
    return 0;
}

#define FILL_STAT(st, v)                                                           \
    do {                                                                           \
        memset(st, 0, sizeof *(st));                                               \
        (st)->st_dev = v[0]; (st)->st_ino = v[1]; (st)->st_mode = v[2];            \
        (st)->st_nlink = v[3]; (st)->st_uid = v[4]; (st)->st_gid = v[5];           \
        (st)->st_rdev = v[6]; (st)->st_size = v[7]; (st)->st_blksize = v[8];       \
        (st)->st_blocks = v[9];                                                    \
        (st)->st_atim.tv_sec = v[10] / 1000000000; (st)->st_atim.tv_nsec = v[10] % 1000000000; \
        (st)->st_mtim.tv_sec = v[11] / 1000000000; (st)->st_mtim.tv_nsec = v[11] % 1000000000; \
        (st)->st_ctim.tv_sec = v[12] / 1000000000; (st)->st_ctim.tv_nsec = v[12] % 1000000000; \
    } while (0)

int fstat(int fd, struct stat *st)
{
    if (!is_kfd(fd))
        return REAL(fstat)(fd, st);
    int64_t v[13];
    if (kstat(fd, v) < 0)
        return -1;
    FILL_STAT(st, v);
    return 0;
}

int fstat64(int fd, struct stat64 *st)
{
    if (!is_kfd(fd))
        return REAL(fstat64)(fd, st);
    int64_t v[13];
    if (kstat(fd, v) < 0)
        return -1;
    FILL_STAT(st, v);
    return 0;
}

int __fxstat(int ver, int fd, struct stat *st)
{
    return is_kfd(fd) ? fstat(fd, st) : REAL(__fxstat)(ver, fd, st);
}

int __fxstat64(int ver, int fd, struct stat64 *st)
{
    return is_kfd(fd) ? fstat64(fd, st) : REAL(__fxstat64)(ver, fd, st);
}

static inline int empty_path_on_kfd(int fd, const char *path, int flags)
{
    return (flags & AT_EMPTY_PATH) && path && !path[0] && is_kfd(fd);
}

int fstatat(int fd, const char *path, struct stat *st, int flags)
{
    return empty_path_on_kfd(fd, path, flags) ? fstat(fd, st) : REAL(fstatat)(fd, path, st, flags);
}

int fstatat64(int fd, const char *path, struct stat64 *st, int flags)
{
    return empty_path_on_kfd(fd, path, flags) ? fstat64(fd, st) : REAL(fstatat64)(fd, path, st, flags);
}

int statx(int fd, const char *path, int flags, unsigned int mask, struct statx *sx)
{
    if (!empty_path_on_kfd(fd, path, flags))
        return REAL(statx)(fd, path, flags, mask, sx);
    int64_t v[13];
    if (kstat(fd, v) < 0)
        return -1;
    memset(sx, 0, sizeof *sx);
    sx->stx_mask = STATX_BASIC_STATS;
    sx->stx_dev_major = (uint32_t)(v[0] >> 8) & 0xfff;
    sx->stx_dev_minor = (uint32_t)((v[0] & 0xff) | ((v[0] >> 12) & ~0xffULL));
    sx->stx_ino = v[1]; sx->stx_mode = (uint16_t)v[2]; sx->stx_nlink = (uint32_t)v[3];
    sx->stx_uid = (uint32_t)v[4]; sx->stx_gid = (uint32_t)v[5];
    sx->stx_rdev_major = (uint32_t)(v[6] >> 8) & 0xfff;
    sx->stx_rdev_minor = (uint32_t)((v[6] & 0xff) | ((v[6] >> 12) & ~0xffULL));
    sx->stx_size = v[7]; sx->stx_blksize = (uint32_t)v[8]; sx->stx_blocks = v[9];
    sx->stx_atime.tv_sec = v[10] / 1000000000; sx->stx_atime.tv_nsec = v[10] % 1000000000;
    sx->stx_mtime.tv_sec = v[11] / 1000000000; sx->stx_mtime.tv_nsec = v[11] % 1000000000;
    sx->stx_ctime.tv_sec = v[12] / 1000000000; sx->stx_ctime.tv_nsec = v[12] % 1000000000;
    return 0;
}

static int kftruncate(int fd, int64_t len)
{
    struct req q = {.op = OP_FTRUNCATE, .fd = fd, .a = len};
    return ret_of(call(&q, NULL, 0, NULL));
}

int ftruncate(int fd, off_t len) { return is_kfd(fd) ? kftruncate(fd, len) : REAL(ftruncate)(fd, len); }
int ftruncate64(int fd, off64_t len) { return is_kfd(fd) ? kftruncate(fd, len) : REAL(ftruncate64)(fd, len); }
