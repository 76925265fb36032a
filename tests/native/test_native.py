"""The native tier end to end: gmem_native.c, built here with the system compiler, runs
unmodified on the real /dev/kvm and under the preload library against kmock."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._native import CC, REAL_KVM, build, lines, needs_cc, run_mock, run_real

import kmock
from kmock import preload
from kmock.preload import argrules

HERE = Path(__file__).parent
pytestmark = needs_cc


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    return build(tmp_path_factory.mktemp("native") / "gmem_native", HERE / "gmem_native.c",
                 "-lpthread")



@pytest.mark.skipif(not REAL_KVM, reason="no usable /dev/kvm")
def test_upstream_lines_match_the_real_kernel(program, lib):
    real = run_real(program)
    res = run_mock(program, kmock.Kernel("host"))
    assert lines(res.stdout, "up ") == lines(real.stdout, "up ")
    assert len(lines(real.stdout, "up ")) > 40
    # the file-level cases of the kernel's guest_memfd selftest, written independently
    assert lines(res.stdout, "sel ") == lines(real.stdout, "sel ")
    assert len(lines(real.stdout, "sel ")) > 15


def test_in_place_conversion_sigbus_and_iommufd_under_kmock(program, lib):
    k = kmock.Kernel("gmem-attributes-v8")
    k.add_vfio_device()
    res = run_mock(program, k)
    ext = lines(res.stdout, "ext ")
    assert "ext to private: ok" in ext
    # the converted page SIGBUSes in the VMM's own process, its neighbour does not
    assert "ext sigbus on private: 1 neighbour 0" in ext
    assert "ext sigbus after shared: 0" in ext
    assert "ext unaligned: -1 EINVAL" in ext
    # a MAP_FIXED mapping over part of a guest_memfd mapping is not remapped by conversions
    assert "ext to private under map_fixed: ok sigbus 0 kept 1" in ext
    assert "ext threaded conversions: 160/160 sigbus 1010" in ext
    assert "ext map_file memfd: ok" in ext  # an fd field of the VMM's own memfd
    assert "ext map_file gmem: -1 EINVAL" in ext  # upstream iommufd policy
    assert "ext vfio bind: ok" in ext and "ext vfio attach: ok" in ext
    assert "up threads: 200/200" in res.stdout
    assert "up sigbus beyond eof: 1" in res.stdout
    assert "up mmap kvm_run: ok sigbus past size 1" in res.stdout
    assert "sel fault_private: mmap ok sigbus 1 1" in res.stdout
    assert "sel fault_overflow: last page 0 past end 1 value 170" in res.stdout
    # the state when the program exited: what it left open (a vCPU keeps its VM; a
    # guest_memfd it never closed keeps the sw_protected VM), then everything released
    snap = res.snapshot
    assert sorted(vm["type"] for vm in snap["vms"]) == [0, 1]
    assert [g["flags"] for g in snap["guest_memfds"]] == [1]
    assert len(k.fdtable) == 0
    assert res.violations == []


def test_shared_channel_spinning_sleeping_and_socket_answer_alike(program, lib, monkeypatch):
    """A thread's calls go through its shared channel when the server is compiled: with
    spinning, with spin 0 (each side sleeps at once) and on the socket (no channel), the
    program prints the same lines, its threads and fork included."""
    from kmock.preload import server

    compiled = server.channel_type() is not None
    outs = []
    for spin, channel in ((server.SPIN_US, True), (0, True), (server.SPIN_US, False)):
        if not channel:
            monkeypatch.setattr(server, "channel_type", lambda: None)
        res = run_mock(program, kmock.Kernel("linux-6.18"), spin_us=spin)
        assert (res.server.channels > 0) == (channel and compiled)
        outs.append(lines(res.stdout, "up ") + lines(res.stdout, "sel "))
    assert "up threads: 200/200" in outs[0]
    assert outs[0] == outs[1] == outs[2]


def test_default_profile_without_real_kvm(program, lib):
    res = run_mock(program, kmock.Kernel("linux-6.18"))
    assert "up open /dev/kvm: ok" in res.stdout
    assert "ext inplace: skip" in res.stdout
    assert "ext iommufd: skip" not in res.stdout  # the mock has /dev/iommu


def test_runs_under_the_pytest_fixture(program, lib, kmock):
    """The kmock fixture's kernel (patching active) serves a native child."""
    kmock.add_vfio_device()
    res = preload.run([program], kernel=kmock, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "ext vfio attach: ok" in res.stdout
    assert res.server.errors == []


def test_subprocess_env(program, lib):
    k = kmock.Kernel("linux-6.18")
    env = kmock.subprocess_env(k)
    assert env["LD_PRELOAD"].split(":")[0] == lib
    p = subprocess.run([program], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "up create vm: ok" in p.stdout


def test_trace_file(program, lib, tmp_path):
    trace = tmp_path / "trace.txt"
    with open(trace, "w") as f:
        run_mock(program, kmock.Kernel("linux-6.18"), trace=f)
    text = trace.read_text()
    assert " ioctl(" in text and "= -1 EINVAL" in text and " mmap(" in text


def test_programs_that_never_touch_kmock_pass_through(lib, tmp_path):
    src = tmp_path / "plain.c"
    src.write_text(
        '#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n#include <sys/mman.h>\n'
        "int main(void){int fd=open(\"/dev/null\",O_RDWR);char b[4];\n"
        "void*p=mmap(0,4096,3,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);munmap(p,4096);\n"
        'printf("%d %zd %zd\\n", fd>=0, write(fd,"abc",3), read(fd,b,4));return 0;}\n')
    exe = tmp_path / "plain"
    subprocess.run([CC, "-o", str(exe), str(src)], check=True)
    res = preload.run([str(exe)], kernel=kmock.Kernel("linux-6.18"), timeout=60)
    assert res.returncode == 0 and res.stdout == "1 3 0\n"
    assert res.server.exit_snapshots == {}  # it never connected


def test_kmock_run_cli(program, lib, tmp_path):
    dump = tmp_path / "state.json"
    p = subprocess.run([sys.executable, "-m", "kmock.preload.cli", "run", "--profile",
                        "linux-6.18", "--dump", str(dump), "--", program],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(HERE.parent.parent)))
    assert p.returncode == 0, p.stderr
    assert "up create vm: ok" in p.stdout
    import json

    state = json.loads(dump.read_text())
    assert state["profile"] == "linux-6.18" and state["server_errors"] == []


def test_plugins_extend_the_argument_rules():
    class Plugin:
        KMOCK_PRELOAD_RULES = {0xC018AEBA: argrules.ArgRule(24, fd_fields=(20,))}

    k = kmock.Kernel("linux-6.18", plugins=[Plugin()])
    table = argrules.rules_for(k)
    assert table[0xC018AEBA].fd_fields == (20,)
    assert kmock.uapi.kvm.KVM_SET_USER_MEMORY_REGION2 in table

    class Broken:
        KMOCK_PRELOAD_RULES = {1: "not a rule"}

    with pytest.raises(TypeError):
        argrules.rules_for(kmock.Kernel("linux-6.18", plugins=[Broken()]))


def test_snp_launch_from_native_code(lib, tmp_path):
    """sev_fd inside kvm_sev_cmd (an fd rule), the launch struct behind cmd.data and the
    source pages behind launch_update.uaddr (read from the VMM by process_vm_readv)."""
    snp = pytest.importorskip("kmock_snp")
    exe = tmp_path / "snp_native"
    subprocess.run([CC, "-O1", "-o", str(exe), str(HERE / "snp_native.c")], check=True)
    k = kmock.Kernel("linux-6.18-snp", plugins=[snp])
    res = run_mock(str(exe), k)
    out = res.stdout.splitlines()
    assert "launch start, kvm fd as sev_fd: -1 ENOTTY" in out  # sev_fd names /dev/kvm
    assert "launch start: ok" in out
    assert "launch update: ok len left 0" in out  # written back into the VMM's struct
    assert "launch finish: ok" in out
    rmp = res.snapshot["snp"]["rmp"]
    assert any(s == 0x40000 and e == 0x40004 and "validated" in what for s, e, what in rmp)


def test_dump_live_reads_a_running_server(lib, tmp_path):
    src = tmp_path / "hold.c"
    src.write_text(
        "#include <fcntl.h>\n#include <stdio.h>\n#include <unistd.h>\n#include <sys/ioctl.h>\n"
        "int main(void){int kvm=open(\"/dev/kvm\",O_RDWR);int vm=ioctl(kvm,0xae01,0);\n"
        "printf(\"%d\\n\", vm>=0);fflush(stdout);char c;read(0,&c,1);return 0;}\n")
    exe = tmp_path / "hold"
    subprocess.run([CC, "-o", str(exe), str(src)], check=True)
    k = kmock.Kernel("linux-6.18")
    srv = preload.serve(k)
    try:
        env = dict(os.environ, **srv.env())
        p = subprocess.Popen([str(exe)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        assert p.stdout.readline() == "1\n"
        live = preload.dump_live(srv.path)
        assert len(live["vms"]) == 1 and live["profile"] == "linux-6.18"
        p.communicate("x", timeout=30)
        assert srv.wait_idle()
        assert preload.dump_live(srv.path)["vms"] == []  # released at the program's exit
    finally:
        srv.stop()
    with pytest.raises(OSError):
        preload.dump_live(srv.path)


def test_bench_preload_smoke(lib):
    from kmock.benchmarks import preload as bench

    lines_out = []
    rows = bench.run(quick=True, out=lines_out.append, rounds=1)
    names = [r[0] for r in rows]
    assert "read(/dev/null, 0)" in names and "mmap+munmap anonymous 4K" in names
    assert all(r[1] > 0 and r[2] > 0 for r in rows)
    assert lines_out[0].startswith("call")


def test_kmock_serve_cli(program, lib, tmp_path):
    import signal

    sock = str(tmp_path / "kmock.sock")
    srv = subprocess.Popen([sys.executable, "-m", "kmock.preload.cli", "serve", "--socket", sock,
                            "--profile", "linux-6.18"], stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, PYTHONPATH=str(HERE.parent.parent)))
    try:
        env = dict(os.environ)
        for _ in range(2):
            key, _, value = srv.stdout.readline().strip().removeprefix("export ").partition("=")
            env[key] = value
        assert env["KMOCK_SOCKET"] == sock
        p = subprocess.run([program], env=env, capture_output=True, text=True, timeout=120,
                           check=False)
        assert p.returncode == 0 and "up create vm: ok" in p.stdout
        assert preload.dump_live(sock)["profile"] == "linux-6.18"
    finally:
        srv.send_signal(signal.SIGINT)
        out, _ = srv.communicate(timeout=30)
    assert '"profile": "linux-6.18"' in out  # the state printed at the end


def test_no_server_fails_the_open_instead_of_reaching_the_real_device(program, lib, tmp_path):
    env = dict(os.environ, LD_PRELOAD=lib, KMOCK_SOCKET=str(tmp_path / "nobody"))
    p = subprocess.run([program], env=env, capture_output=True, text=True, timeout=60,
                       check=False)
    assert p.returncode == 1
    assert p.stdout.splitlines() == ["up open /dev/kvm: -1 ENOENT"]
    assert "no kmock server" in p.stderr


def test_tdx_launch_from_native_code(lib, tmp_path):
    """cpuid arrays behind kvm_tdx_cmd.data (sized by nent) and INIT_MEM_REGION's source
    buffer are read from, and written back to, the VMM by the server; no rule needed."""
    tdx = pytest.importorskip("kmock_tdx")
    exe = tmp_path / "tdx_native"
    subprocess.run([CC, "-O1", "-o", str(exe), str(HERE / "tdx_native.c")], check=True)
    res = run_mock(str(exe), kmock.Kernel("linux-6.18-tdx", plugins=[tdx]))
    out = res.stdout.splitlines()
    assert "capabilities: ok sept_ve_disable 1 cpuid entries filled" in out
    assert "capabilities nent 0: -1 E2BIG" in out
    assert "init vm: ok" in out and "get cpuid: ok set cpuid2: ok" in out
    assert "init mem region: ok nr_pages left 0" in out
    assert "init mem region unaligned source: -1 EINVAL" in out
    # the source page is not mapped in the VMM: process_vm_readv faults, EFAULT
    assert "init mem region unmapped source: -1 EFAULT nr_pages left 1" in out
    assert "finalize: ok" in out


def test_module_parameters_are_the_mock_kernels(program, lib):
    """/sys/module/kvm/parameters/* that the selftests' library reads come from the server
    (a memfd holding the contents), not from the host's kvm module, which may be absent."""
    res = run_mock(program, kmock.Kernel("linux-6.18"))
    assert "up force_emulation_prefix: ok 0" in res.stdout
    path = "/sys/module/kvm/parameters/force_emulation_prefix"
    res = run_mock(program, kmock.Kernel("linux-6.18"), files={path: b"7\n"})
    assert "up force_emulation_prefix: ok 7" in res.stdout


@pytest.mark.parametrize("spin_us, exc", [("50", TypeError), (True, TypeError), (-1, ValueError),
                                          (float("nan"), ValueError), (1e30, ValueError)])
def test_a_bad_spin_bound_is_refused_naming_it(spin_us, exc):
    """serve(spin_us=...) takes a number of microseconds in [0, MAX_SPIN_US]; anything else
    is refused before a server starts, with a message that names the argument."""
    with pytest.raises(exc, match="spin_us"):
        preload.serve(kmock.Kernel(), spin_us=spin_us)
