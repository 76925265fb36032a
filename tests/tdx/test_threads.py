"""A vCPU thread accepting and using its pages while another thread converts and punches
other pages of the same guest_memfd: no deadlock between mmu_lock, the invalidate lock and
the TD's lock, and the S-EPT ends as each side left it."""

import threading

from kmock.uapi import kvm as K

from ._td import GPA, P, Td

N = 64
ROUNDS = 40


def test_vcpu_and_converter_threads(tdx_kernel):
    t = Td(tdx_kernel(), npages=N).launch()
    guest_pages = range(2, N // 2)
    host_pages = range(N // 2, N)
    errors = []

    def vcpu():
        try:
            g = t.guest()
            for r in range(ROUNDS):
                for p in guest_pages:
                    if r == 0:
                        g.tdx.accept(GPA + p * P)
                    g.write(GPA + p * P, b"r%d" % r)
                g.stop()
                assert t.run() == K.KVM_EXIT_INTR
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def converter():
        try:
            for r in range(ROUNDS):
                for p in host_pages:
                    t.set_private(GPA + p * P, P, private=bool(r % 2))
                t.k.fallocate(t.gmem, 3, (N // 2) * P, (N // 2) * P)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=vcpu), threading.Thread(target=converter)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads), "deadlock"
    assert not errors, errors
    assert not t.k.violations
    assert {t.state(p) for p in guest_pages} == {"MAPPED"}
    assert {t.state(p) for p in host_pages} == {"FREE"}
    rd = t.guest().read(GPA + 5 * P, 3)
    t.run_to_stop()
    assert rd.result == b"r%d" % (ROUNDS - 1)
