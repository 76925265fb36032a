"""``kmock bench preload``: the native tier's cost, side by side with the real kernel.

A small C program (built here with ``cc``) times calls in a loop and prints ns per call.
It runs alternately without the library (the real kernel, the real libc) and under
``LD_PRELOAD`` against a kmock server in this process; best and median of the rounds
are printed.

- forwarded: ``ioctl(KVM_CHECK_EXTENSION)`` and a 4K guest_memfd ``fallocate``, a round
  trip to the server vs the real /dev/kvm; target (issue 15) at most 20x, judged on the
  median of the rounds (the best is printed too).
- pass-through: ``read(/dev/null, 0)``, ``fstat``, ``ioctl(pipe, FIONREAD)`` and
  ``mmap``+``munmap`` of anonymous memory, through the library's wrapper and through
  libc's own function (``dlsym(RTLD_NEXT)``) in one process, interleaved; target at most 1.1x.
"""

import os
import shutil
import statistics
import subprocess
import tempfile

TARGET_FORWARDED = 20.0
TARGET_PASS = 1.1

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct kvm_create_guest_memfd { uint64_t size, flags, reserved[6]; };
#define KVM_CREATE_VM _IO(0xAE, 0x01)
#define KVM_CHECK_EXTENSION _IO(0xAE, 0x03)
#define KVM_CREATE_GUEST_MEMFD _IOWR(0xAE, 0xd4, struct kvm_create_guest_memfd)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e9 + t.tv_nsec; }

static ssize_t (*libc_read)(int, void *, size_t);
static int (*libc_fstat)(int, struct stat *);
static int (*libc_ioctl)(int, unsigned long, ...);
static void *(*libc_mmap)(void *, size_t, int, int, int, off_t);
static int (*libc_munmap)(void *, size_t);

/* one block of n calls; ``direct``: through libc's own function (dlsym RTLD_NEXT skips
 * a preloaded library), else through the symbol the program links to */
static double block(const char *what, long n, int direct, int fd, int pfd)
{
    char buf[8];
    struct stat st;
    int v, r = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (!strcmp(what, "read")) r |= direct ? libc_read(fd, buf, 0) : read(fd, buf, 0);
        else if (!strcmp(what, "fstat")) r |= direct ? libc_fstat(fd, &st) : fstat(fd, &st);
        else if (!strcmp(what, "fionread")) r |= direct ? libc_ioctl(pfd, FIONREAD, &v) : ioctl(pfd, FIONREAD, &v);
        else if (!strcmp(what, "mmap")) {
            void *p = direct ? libc_mmap(0, 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                             : mmap(0, 4096, 3, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            r |= direct ? libc_munmap(p, 4096) : munmap(p, 4096);
        }
    }
    if (r)
        exit(1);
    return (now() - t0) / n;
}

int main(int argc, char **argv)
{
    const char *what = argv[1];
    long n = atol(argv[2]);
    if (!strncmp(what, "pass-", 5)) {
        /* pass-through: libc directly and through the interposed symbol, interleaved */
        libc_read = dlsym(RTLD_NEXT, "read");
        libc_fstat = dlsym(RTLD_NEXT, "fstat");
        libc_ioctl = dlsym(RTLD_NEXT, "ioctl");
        libc_mmap = dlsym(RTLD_NEXT, "mmap");
        libc_munmap = dlsym(RTLD_NEXT, "munmap");
        int fd = open("/dev/null", O_RDONLY), pfd[2];
        if (pipe(pfd) < 0) return 1;
        int rounds = atoi(argv[3]);
        for (int i = 0; i < rounds; i++)
            printf("%.2f %.2f\n", block(what + 5, n, 1, fd, pfd[0]), block(what + 5, n, 0, fd, pfd[0]));
        return 0;
    }
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    int vm = ioctl(fd, KVM_CREATE_VM, 0);
    struct kvm_create_guest_memfd c = {.size = 1 << 30};
    int g = ioctl(vm, KVM_CREATE_GUEST_MEMFD, &c);
    if (fd < 0 || vm < 0 || g < 0) { perror("setup"); return 1; }
    int r = 0;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (!strcmp(what, "kvm-check")) r |= ioctl(fd, KVM_CHECK_EXTENSION, 234) < 0;
        else r |= fallocate(g, 1, ((i * 7919) % 262144) * 4096, 4096);
    }
    printf("%.1f\n", (now() - t0) / n);
    return r != 0;
}
"""

CASES = [
    # (name, program argument, needs /dev/kvm, kind)
    ("ioctl(kvm, CHECK_EXTENSION)", "kvm-check", True, "forwarded"),
    ("fallocate(gmem, KEEP_SIZE, 4K)", "kvm-fallocate", True, "forwarded"),
    ("read(/dev/null, 0)", "pass-read", False, "pass"),
    ("fstat(/dev/null)", "pass-fstat", False, "pass"),
    ("ioctl(pipe, FIONREAD)", "pass-fionread", False, "pass"),
    ("mmap+munmap anonymous 4K", "pass-mmap", False, "pass"),
]


def _build(tmp):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = os.path.join(tmp, "bench.c")
    exe = os.path.join(tmp, "bench")
    with open(src, "w") as f:
        f.write(SOURCE)
    subprocess.run([cc, "-O2", "-o", exe, src, "-ldl"], check=True)
    return exe


def _once(exe, arg, n, env):
    p = subprocess.run([exe, arg, str(n)], env=env, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"bench {arg} failed: {p.stderr.strip()}")
    return float(p.stdout)


def _pass(exe, arg, n, rounds, env):
    """Pass-through rows: one process under the library, blocks through libc's own
    function and through the interposed symbol interleaved (the machine's noise hits
    both sides alike)."""
    p = subprocess.run([exe, arg, str(n), str(rounds)], env=env, capture_output=True,
                       text=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"bench {arg} failed: {p.stderr.strip()}")
    pairs = [tuple(map(float, ln.split())) for ln in p.stdout.split("\n") if ln.strip()]
    return [x for x, _ in pairs], [y for _, y in pairs]


def run(quick=False, out=print, rounds=7):
    from .. import Kernel
    from ..preload import serve

    rounds = 3 if quick else rounds
    with tempfile.TemporaryDirectory(prefix="kmock-bench-") as tmp:
        exe = _build(tmp)
        if exe is None:
            out("no C compiler (cc): skipped")
            return []
        real_kvm = os.access("/dev/kvm", os.R_OK | os.W_OK)
        srv = serve(Kernel("host" if real_kvm else "linux-6.18"))
        try:
            plain = dict(os.environ)
            plain.pop("LD_PRELOAD", None)
            plain.pop("KMOCK_SOCKET", None)
            pre = dict(plain)
            pre.update(srv.env())
            out(f"{'call':<34}{'side':<10}{'best ns':>10}{'median ns':>11}"
                f"{'ratio best/median':>19}  target (on the median)")
            rows = []
            for name, arg, needs_kvm, kind in CASES:
                if needs_kvm and not real_kvm:
                    out(f"{name:<34}no usable /dev/kvm to compare with: skipped")
                    continue
                if kind == "forwarded":
                    n = 200 if quick else 2000
                    a, b = [], []
                    for _ in range(rounds):
                        a.append(_once(exe, arg, n, plain))
                        b.append(_once(exe, arg, n, pre))
                    target, side = TARGET_FORWARDED, "kmock"
                else:
                    n = 2000 if quick else 20000
                    a, b = _pass(exe, arg, n, rounds * 3, pre)
                    target, side = TARGET_PASS, "preload"
                ratio = min(b) / min(a)
                median_ratio = statistics.median(b) / statistics.median(a)
                out(f"{name:<34}{'real':<10}{min(a):>10.1f}{statistics.median(a):>11.1f}")
                out(f"{'':<34}{side:<10}{min(b):>10.1f}{statistics.median(b):>11.1f}"
                    f"{ratio:>7.2f}x/{median_ratio:.2f}x  <= {target}x "
                    f"{'ok' if median_ratio <= target else 'MISSED'}")
                rows.append((name, min(a), min(b), ratio, target, median_ratio))
            return rows
        finally:
            srv.stop()
