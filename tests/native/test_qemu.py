"""An unmodified QEMU under the native tier: qemu-system-x86_64 -accel kvm starts against
kmock, reaches its main loop and quits on a QMP command, with the VM it built visible in
the mock's state (docs/native-qemu.md).

QEMU is not a dependency of kmock: the tests skip, saying so, where it is not installed
(Debian: ``apt install qemu-system-x86``). On the real kernel the same command line is what
docs/native-qemu.md compares the ioctl sequence with.
"""

import json
import shutil
import socket
import sys
import threading
import time

import pytest

import kmock
from kmock import preload
from kmock.uapi import kvm as K
from kmock.uapi import x86 as X86

from ._native import REAL_KVM

QEMU = shutil.which("qemu-system-x86_64")
pytestmark = pytest.mark.skipif(QEMU is None, reason="QEMU is not installed "
                                "(qemu-system-x86_64; Debian: apt install qemu-system-x86)")

#: a q35 machine stopped before the first instruction (-S): QEMU makes its VM, memslots,
#: vCPU and devices, resets them, and waits
COMMON = ["-accel", "kvm", "-nodefaults", "-display", "none", "-m", "64", "-S"]
#: the split irqchip confidential VMs need
SPLIT = ["-machine", "q35,kernel-irqchip=split"]
#: QEMU's default: the full in-kernel irqchip (PIC, I/O APIC, PIT in the kernel)
FULL = ["-machine", "q35"]
BASE = COMMON + SPLIT
MACHINES = {"split": SPLIT, "full": FULL}


def _quit_over_qmp(path, out):
    """Connect to QEMU's QMP socket once it exists; record the greeting and quit."""
    deadline = time.monotonic() + 60
    while True:
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                out.append("no QMP socket")
                return
            time.sleep(0.05)
    with s, s.makefile("rw") as f:
        out.append(json.loads(f.readline()))  # {"QMP": {...}}: QEMU's main loop runs
        for cmd in ("qmp_capabilities", "query-status", "quit"):
            f.write(json.dumps({"execute": cmd}) + "\n")
            f.flush()
            out.append(json.loads(f.readline()))


def run_qemu(tmp_path, kernel, *extra, machine=SPLIT):
    qmp = str(tmp_path / "qmp.sock")
    replies = []
    t = threading.Thread(target=_quit_over_qmp, args=(qmp, replies), daemon=True)
    t.start()
    with open(tmp_path / "trace", "w") as trace:
        res = preload.run([QEMU, *COMMON, *machine, *extra, "-qmp",
                           f"unix:{qmp},server=on,wait=off"],
                          kernel=kernel, timeout=120, trace=trace)
    t.join(10)
    return res, replies, (tmp_path / "trace").read_text()


#: QEMU's default CPU model (qemu64: machine check, MTRRs, the kvmvapic option ROM)
CPU = ()


def check_started(res, replies, nvcpus=1):
    assert res.server.errors == []
    assert res.returncode == 0, res.stderr
    assert "QMP" in replies[0]
    assert replies[2] == {"return": {"status": "prelaunch", "singlestep": False, "running": False}}
    vm, = res.snapshot["vms"]
    assert len(vm["vcpus"]) == nvcpus
    assert vm["memslots"], "QEMU mapped its RAM and ROMs"
    assert res.violations == []


def requests(trace):
    return {int(ln.split()[2].rstrip(","), 16) for ln in trace.splitlines() if " ioctl(" in ln}


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_qemu_starts_and_quits_on_linux_618(tmp_path, lib, machine):
    res, replies, trace = run_qemu(tmp_path, kmock.Kernel("linux-6.18"), *CPU,
                                   machine=MACHINES[machine])
    check_started(res, replies)
    # the 6.18 table has the KVM paravirtual leaves QEMU's CPU model asks for
    assert "CPUID.40000001H" not in res.stderr, res.stderr
    # the 6.18 table has no XSAVE (its value is the hardware's): QEMU uses KVM_SET_FPU
    assert X86.KVM_SET_FPU in requests(trace) and X86.KVM_SET_XSAVE not in requests(trace)


@pytest.mark.skipif(not REAL_KVM, reason="no usable /dev/kvm (profile host probes it)")
def test_qemu_starts_and_quits_on_the_host_profile(tmp_path, lib):
    res, replies, trace = run_qemu(tmp_path, kmock.Kernel("host"), *CPU)
    check_started(res, replies)
    # what this host's capabilities made QEMU call (each stopped it as ENOTTY before)
    for req in (K.KVM_IRQ_LINE_STATUS, K.KVM_REGISTER_COALESCED_MMIO, X86.KVM_SET_XSAVE,
                X86.KVM_X86_SET_MSR_FILTER, X86.KVM_TPR_ACCESS_REPORTING,
                X86.KVM_X86_SETUP_MCE, X86.KVM_GET_DEVICE_ATTR):
        assert req in requests(trace), hex(req)


STRACE = shutil.which("strace")
#: ioctls that return a new fd (its number differs between the two runs)
FD_RETURNING = {K.KVM_CREATE_VM, K.KVM_CREATE_VCPU, K.KVM_CREATE_GUEST_MEMFD,
                K.KVM_GET_STATS_FD}


#: ioctls QEMU makes as often as its device timers fire before the QMP quit (the RTC's and
#: the PIT's interrupt lines): compared by their results, not by their count
TIMED = {K.KVM_IRQ_LINE_STATUS, K.KVM_IRQ_LINE}


def _outcomes(pairs):
    """Counter of (request, result) for KVM ioctls (type 0xAE); an fd result is "fd"."""
    import collections

    out = collections.Counter()
    for req, res in pairs:
        req &= 0xFFFFFFFF
        if (req >> 8) & 0xFF != 0xAE:
            continue
        if req in FD_RETURNING and not res.startswith("E"):
            res = "fd"
        if req in TIMED:
            # how many, and whether a line change found the interrupt already pending
            # (KVM_IRQ_LINE_STATUS 0 = coalesced), depend on QEMU's timers and the load:
            # an errno must match, a success is a success
            out[(req, res if res.startswith("E") else "ok")] = 1
        else:
            out[(req, res)] += 1
    return out


def _real_pairs(path):
    import re

    pat = re.compile(r"ioctl\((?:0x[0-9a-f]+|\d+), (0x[0-9a-f]+), [^)]*\)\s+= (-1 (E[A-Z0-9]+)|\S+)")
    for ln in open(path):
        m = pat.search(ln)
        if m:
            yield int(m.group(1), 16), m.group(3) or str(int(m.group(2), 0))


def _mock_pairs(trace):
    import re

    pat = re.compile(r" ioctl\(\d+, (0x[0-9a-f]+), 0x[0-9a-f]+\) = (-1 (E[A-Z0-9]+)|-?\d+)")
    for ln in trace.splitlines():
        m = pat.search(ln)
        if m:
            yield int(m.group(1), 16), m.group(3) or m.group(2)


@pytest.mark.skipif(not REAL_KVM, reason="no usable /dev/kvm (profile host probes it)")
def test_qemu_with_the_full_irqchip_starts_and_quits_on_the_host_profile(tmp_path, lib):
    """QEMU's default machine: the PIC, I/O APIC and PIT in the kernel. It creates the PIT,
    resets the PIC and I/O APIC with KVM_SET_IRQCHIP and the PIT with KVM_SET_PIT2 (each
    fatal if it fails: "Create kernel PIC irqchip failed" was the ENOTTY of kmock before)."""
    res, replies, trace = run_qemu(tmp_path, kmock.Kernel("host"), *CPU, machine=FULL)
    check_started(res, replies)
    for req in (K.KVM_CREATE_IRQCHIP, X86.KVM_CREATE_PIT2, X86.KVM_SET_IRQCHIP,
                X86.KVM_GET_PIT2, X86.KVM_SET_PIT2, K.KVM_IRQ_LINE_STATUS):
        assert req in requests(trace), hex(req)
    assert "irqchip" not in res.stderr, res.stderr


@pytest.mark.parametrize("machine", sorted(MACHINES))
@pytest.mark.skipif(not REAL_KVM or STRACE is None, reason="needs a usable /dev/kvm and strace")
def test_qemu_makes_the_same_kvm_calls_with_the_same_results(tmp_path, lib, machine):
    """Every KVM ioctl QEMU makes up to its main loop, with its result, counted on the
    real kernel (strace) and under kmock with the host profile: the same multiset, with
    the split irqchip and with QEMU's default full one."""
    _same_calls_as_the_real_kernel(tmp_path, MACHINES[machine])


@pytest.mark.skipif(not REAL_KVM or STRACE is None, reason="needs a usable /dev/kvm and strace")
def test_qemu_smp_makes_the_same_kvm_calls_with_the_same_results(tmp_path, lib):
    """Two vCPUs: QEMU resets its AP with KVM_SET_MP_STATE(UNINITIALIZED), which the real
    kernel takes with an in-kernel LAPIC (it was EINVAL under kmock)."""
    trace = _same_calls_as_the_real_kernel(tmp_path, FULL, "-smp", "2", nvcpus=2)
    sets = [ln for ln in trace.splitlines() if f", {X86.KVM_SET_MP_STATE:#x}, " in ln]
    assert len(sets) >= 2 and all(ln.endswith("= 0") for ln in sets)


@pytest.mark.parametrize("cpu", ["host", "max"])
@pytest.mark.skipif(not REAL_KVM or STRACE is None, reason="needs a usable /dev/kvm and strace")
def test_qemu_cpu_models_make_the_same_kvm_calls_with_the_same_results(tmp_path, lib, cpu):
    """-cpu host / max: QEMU enables the KVM PV features it finds and, at reset, writes
    MSR_KVM_ASYNC_PF_INT, which the kernel takes with an in-kernel LAPIC (QEMU aborted on
    kmock's refusal: "failed to set MSR 0x4b564d06")."""
    _same_calls_as_the_real_kernel(tmp_path, FULL, "-cpu", cpu)


@pytest.mark.skipif(not REAL_KVM or STRACE is None, reason="needs a usable /dev/kvm and strace")
def test_qemu_with_a_dirty_ring_makes_the_same_kvm_calls(tmp_path, lib, monkeypatch):
    """-accel kvm,dirty-ring-size=4096: QEMU enables KVM_CAP_DIRTY_LOG_RING before its
    vCPUs and maps each vCPU's ring (kmock refused the enable with EINVAL before)."""
    monkeypatch.setattr(sys.modules[__name__], "COMMON",
                        ["-accel", "kvm,dirty-ring-size=4096", *COMMON[2:]])
    trace = _same_calls_as_the_real_kernel(tmp_path, FULL)
    enables = [ln for ln in trace.splitlines() if f", {K.KVM_ENABLE_CAP:#x}, " in ln]
    assert enables and all(ln.endswith("= 0") for ln in enables)


def _same_calls_as_the_real_kernel(tmp_path, machine, *extra, nvcpus=1):
    """Run QEMU under kmock (host profile) and under strace on the real kernel; assert the
    same multiset of (ioctl, result); return kmock's trace."""
    import subprocess

    res, replies, trace = run_qemu(tmp_path, kmock.Kernel("host"), *CPU, *extra,
                                   machine=machine)
    check_started(res, replies, nvcpus)
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    qmp = str(real_dir / "qmp.sock")
    got = []
    t = threading.Thread(target=_quit_over_qmp, args=(qmp, got), daemon=True)
    t.start()
    subprocess.run([STRACE, "-f", "-e", "trace=ioctl", "-e", "raw=ioctl", "-o",
                    str(real_dir / "strace"), QEMU, *COMMON, *machine, *CPU, *extra, "-qmp",
                    f"unix:{qmp},server=on,wait=off"], check=True, timeout=120,
                   capture_output=True)
    t.join(10)
    real = _outcomes(_real_pairs(real_dir / "strace"))
    mock = _outcomes(_mock_pairs(trace))
    assert sum(real.values()) > 100
    differ = {k: (real[k], mock[k]) for k in real.keys() | mock.keys() if real[k] != mock[k]}
    assert differ == {}
    return trace


def test_a_running_qemu_vcpu_halts_in_the_kernel_until_kicked(tmp_path, lib):
    """Without -S QEMU runs its vCPU. kmock's guest has nothing to run, so with the split
    irqchip's in-kernel LAPIC the vCPU halts inside KVM_RUN, as a real HLT does, and QEMU's
    kicks (run.immediate_exit with its signal) end each KVM_RUN with EINTR: a few KVM_RUNs,
    not the tens of thousands a second of a KVM_EXIT_HLT that QEMU would re-enter."""
    qmp = str(tmp_path / "qmp.sock")
    replies = []

    def quit_later():
        time.sleep(2)
        _quit_over_qmp(qmp, replies)

    t = threading.Thread(target=quit_later, daemon=True)
    t.start()
    argv = [QEMU, *[a for a in BASE if a != "-S"], "-qmp", f"unix:{qmp},server=on,wait=off"]
    with open(tmp_path / "trace", "w") as trace:
        res = preload.run(argv, kernel=kmock.Kernel("linux-6.18"), timeout=120, trace=trace)
    t.join(10)
    assert res.server.errors == [] and res.returncode == 0, res.stderr
    runs = [ln for ln in (tmp_path / "trace").read_text().splitlines()
            if f", {K.KVM_RUN:#x}, " in ln]
    assert 1 <= len(runs) < 2000
    assert all(ln.endswith("= -1 EINTR") for ln in runs)
