/* kmock_chan.h: the shared channel of one connection between a thread of a native
 * program (kmock_preload.c, call()) and its server thread (kmock.preload._channel,
 * csrc_preload/_channel.pyx). Both include this file; everything in it is static.
 *
 * Once a thread's connection is set up, its requests and replies go through a shared
 * memory area instead of the socket (OP_CHANNEL: the server passes a memfd of
 * sizeof(struct chan)). The client writes the request at ``data`` and sets ``state`` to
 * CH_REQ; the server writes the reply over it and sets CH_REP. Each side spins a bounded
 * time for the other (the server's ``spin_ns``, sent in the OP_CHANNEL reply; adaptive,
 * see spin_wait), then sleeps in futex_wait on ``state``; the other side wakes it when
 * its ``*_sleep`` flag is set. A thread that exits sets CH_CLOSED; a sleeper also looks
 * every CHAN_CHECK_NS whether the socket was closed (a process that died). The socket
 * still carries the setup (HELLO, OP_CHANNEL) and the fd of a reply (RF_SOCKFD: a
 * one-byte message with SCM_RIGHTS, sent before the reply is posted). The wire format
 * is kmock/preload/protocol.py's.
 */
#ifndef KMOCK_CHAN_H
#define KMOCK_CHAN_H

#include <errno.h>
#include <sched.h>
#include <linux/futex.h>
#include <poll.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAXPAY (1u << 20)        /* the largest payload (protocol.MAXPAY) */
#define BUFSZ (MAXPAY + 4096)    /* a request or reply with its payload */
#define PG 4096

enum { CH_IDLE, CH_REQ, CH_REP, CH_CLOSED };
struct chan {
    uint32_t state;      /* CH_*: CH_REQ and CH_CLOSED are the client's, CH_REP the server's */
    uint32_t srv_sleep;  /* 1: the server sleeps in futex_wait on state */
    uint32_t cli_sleep;  /* 1: the client sleeps in futex_wait on state */
    int32_t cli_cpu;     /* the CPU the client last posted a request from */
    int32_t srv_cpu;     /* the CPU the server last took a request on */
    uint32_t srv_skip, srv_backoff; /* the server's adaptive spinning (spin_wait) */
    char pad[PG - 28];
    char data[BUFSZ];    /* the request (48 bytes + payload), then its reply */
};

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

static inline uint64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Wait at most ``ns`` while *w == v, without sleeping; returns the last value seen.
 * (No sched_yield: on a loaded machine it hands the CPU to a CPU-bound task for a whole
 * time slice, milliseconds, where a sleeper woken by the other side runs at once.) */
static uint32_t spin_while(const uint32_t *w, uint32_t v, long ns, int *late)
{
    uint32_t x = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    *late = 0;
    if (x != v || ns <= 0)
        return x;
    uint64_t end = mono_ns() + (uint64_t)ns;
    for (unsigned i = 1;; i++) {
        cpu_relax();
        x = __atomic_load_n(w, __ATOMIC_ACQUIRE);
        if (x != v) {
            /* seen only after the budget: this thread was off the CPU meanwhile */
            *late = i > 64 && mono_ns() > end;
            return x;
        }
        if (!(i & 63) && mono_ns() >= end)
            return x;
    }
}

/* Adaptive spinning: after a wait the spin did not end in time (the other side was asleep,
 * busy for longer, or this thread or the other was off the CPU), the next waits do not spin, 1, 2, 4 ... up to 64 of them;
 * a spin that ends a wait re-arms it. On a machine with more runnable tasks than CPUs a
 * spinner is preempted with the other side's answer pending and loses a time slice
 * (milliseconds), where a sleeper the other side wakes runs at once: spinning then mostly
 * stops by itself. And only one thread of a process spins at a time (one server thread
 * of all connections, one thread of a multi-threaded program): the others sleep at once,
 * so spinning never takes more than one CPU per side. Nor does a side spin when the other
 * last ran on its own CPU: the scheduler often puts a woken thread on its waker's CPU, and
 * the other side could then not run before the spin ends. */
static int spinners; /* threads of this process (on this side) spinning now */

static uint32_t spin_wait(const uint32_t *w, uint32_t v, long ns, const int32_t *other_cpu,
                          uint32_t *skip, uint32_t *backoff)
{
    if (ns > 0 && __atomic_load_n(other_cpu, __ATOMIC_RELAXED) == sched_getcpu())
        return __atomic_load_n(w, __ATOMIC_ACQUIRE); /* the other side waits for this CPU */
    if (*skip) {
        --*skip;
        return __atomic_load_n(w, __ATOMIC_ACQUIRE);
    }
    if (ns > 0 && __atomic_fetch_add(&spinners, 1, __ATOMIC_RELAXED) >= 1) {
        /* one spinner per side: more would take the CPUs the others' answers need */
        __atomic_fetch_sub(&spinners, 1, __ATOMIC_RELAXED);
        return __atomic_load_n(w, __ATOMIC_ACQUIRE);
    }
    int late;
    uint32_t x = spin_while(w, v, ns, &late);
    if (ns > 0)
        __atomic_fetch_sub(&spinners, 1, __ATOMIC_RELAXED);
    if (x != v && !late) {
        *backoff = 0;
    } else if (ns > 0) {
        *backoff = *backoff ? (*backoff < 64 ? *backoff * 2 : 64) : 1;
        *skip = *backoff;
    }
    return x;
}

static long futex(uint32_t *w, int op, uint32_t v, const struct timespec *to)
{
    return syscall(SYS_futex, w, op, v, to, NULL, 0);
}

/* whether the other end of the connection ``sock`` is closed (its thread or process is
 * gone), without waiting */
static int peer_gone(int sock)
{
    struct pollfd p = {.fd = sock, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL));
}

/* a sleeper looks at the connection this often (a process that died without closing its
 * channel: the socket closes, the channel's state does not change) */
#define CHAN_CHECK_NS 50000000L

/* wake whichever side sleeps on ch->state */
static void chan_wake(struct chan *ch)
{
    futex(&ch->state, FUTEX_WAKE, INT32_MAX, NULL);
}

/* The server's side: post the reply written at ch->data (``post``), then wait for the
 * next request. Returns 1 when one is posted, 0 when the client closed the connection.
 * Called by the server's thread of this connection without the GIL. */
static inline int kmock_chan_serve(struct chan *ch, int sock, long spin_ns, int post)
{
    uint32_t seen = CH_IDLE; /* the first wait: nothing was posted yet */
    if (post) {
        seen = CH_REP;
        __atomic_store_n(&ch->state, CH_REP, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&ch->cli_sleep, __ATOMIC_SEQ_CST))
            chan_wake(ch);
    }
    for (;;) {
        uint32_t x = spin_wait(&ch->state, seen, spin_ns, &ch->cli_cpu, &ch->srv_skip,
                               &ch->srv_backoff);
        if (x == CH_REQ) {
            __atomic_store_n(&ch->srv_cpu, sched_getcpu(), __ATOMIC_RELAXED);
            return 1;
        }
        if (x != seen)
            return 0; /* CH_CLOSED */
        __atomic_store_n(&ch->srv_sleep, 1, __ATOMIC_SEQ_CST);
        struct timespec to = {0, CHAN_CHECK_NS};
        long rc = futex(&ch->state, FUTEX_WAIT, seen, &to);
        int e = errno;
        __atomic_store_n(&ch->srv_sleep, 0, __ATOMIC_SEQ_CST);
        if (rc < 0 && e == ETIMEDOUT && __atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) == seen &&
            peer_gone(sock))
            return 0;
    }
}

#endif
