"""MADV_COLLAPSE on a guest_memfd mapping from native code (the kernel selftest
guest_memfd_test.c test_collapse): guest_memfd folios are never collapsed, so on a mapping
that can hold a PMD-aligned block it is EINVAL, for the whole block or a few pages of it
(probed on 6.18.44). The VMM's mapping under the library is the backing shmem memfd,
which would collapse: the library refuses it (csrc_preload/kmock_preload.c
collapse_refused)."""

import subprocess

import pytest

from ._native import REAL_KVM, build, needs_cc

import kmock
from kmock import preload

pytestmark = needs_cc

SOURCE = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
struct kvm_create_guest_memfd { uint64_t size, flags, reserved[6]; };
#define KVM_CREATE_GUEST_MEMFD _IOWR(0xAE, 0xd4, struct kvm_create_guest_memfd)
#define PMD (2ul << 20)
static const char *res(int r) { static char b[32]; snprintf(b, sizeof b, r ? "-1 %s" : "0", strerrorname_np(errno)); return b; }
int main(void)
{
    int kvm = open("/dev/kvm", O_RDWR);
    int vm = ioctl(kvm, 0xAE01, 0);
    struct kvm_create_guest_memfd g = {.size = PMD, .flags = 3};  /* MMAP | INIT_SHARED */
    int fd = ioctl(vm, KVM_CREATE_GUEST_MEMFD, &g);
    char *r = mmap(NULL, 2 * PMD, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *a = (char *)(((uintptr_t)r + PMD - 1) & ~(PMD - 1));
    char *m = mmap(a, PMD, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_SHARED, fd, 0);
    printf("aligned: %d\n", m == a);
    for (size_t i = 0; i < PMD; i += 4096)
        (void)*(volatile char *)(m + i);
    printf("hugepage: %s\n", res(madvise(m, PMD, MADV_HUGEPAGE)));
    printf("collapse of the whole block: %s\n", res(madvise(m, PMD, MADV_COLLAPSE)));
    printf("collapse of 16 pages: %s\n", res(madvise(m + 4096, 16 * 4096, MADV_COLLAPSE)));
    printf("dontneed: %s value %d\n", res(madvise(m, PMD, MADV_DONTNEED)), m[0]);
    munmap(r, 2 * PMD);
    return 0;
}
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    d = tmp_path_factory.mktemp("collapse")
    (d / "collapse.c").write_text(SOURCE)
    return build(d / "collapse", d / "collapse.c")


EXPECTED = ["aligned: 1", "hugepage: 0", "collapse of the whole block: -1 EINVAL",
            "collapse of 16 pages: -1 EINVAL", "dontneed: 0 value 0"]


def test_collapse_refused_under_kmock(program, lib):
    res = preload.run([program], kernel=kmock.Kernel("linux-6.18"), timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.server.errors == []
    assert res.stdout.splitlines() == EXPECTED


@pytest.mark.skipif(not REAL_KVM, reason="no usable /dev/kvm")
def test_collapse_matches_the_real_kernel(program, lib):
    real = subprocess.run([program], check=False, capture_output=True, text=True, timeout=60)
    assert real.returncode == 0, real.stderr
    assert real.stdout.splitlines() == EXPECTED
