"""Kernel(trace=...) / HostKernel(trace=...) JSON lines, and kmock.replay."""

import io
import json
import os

import pytest

import kmock
from kmock import replay, trace
from kmock.uapi import kvm as K

P = 4096


def _records(buf):
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert lines[0]["kmock_trace"] == trace.VERSION
    return lines[0], lines[1:]


def _upstream_calls(k):
    """Upstream KVM calls only (no guest runs): the same on the real kernel and the mock."""
    kvm = k.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    k.ioctl(kvm, K.KVM_GET_API_VERSION, 0)
    k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_USER_MEMORY)
    k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_VM_TYPES)
    vm = k.ioctl(kvm, K.KVM_CREATE_VM, 0)
    size = k.ioctl(kvm, K.KVM_GET_VCPU_MMAP_SIZE, 0)
    region = K.kvm_userspace_memory_region2(slot=0, guest_phys_addr=0, memory_size=1 << 21,
                                            userspace_addr=1 << 30)
    for gpa in (0x123, 0):  # EINVAL (misaligned), then accepted
        region.guest_phys_addr = gpa
        try:
            k.ioctl(vm, K.KVM_SET_USER_MEMORY_REGION2, region)
        except OSError:
            pass
    try:
        k.ioctl(vm, K.KVM_CREATE_VCPU, 1 << 20)  # EINVAL: id too large
    except OSError:
        pass
    vcpu = k.ioctl(vm, K.KVM_CREATE_VCPU, 0)
    k.mmap(vcpu, size, 3, 1, 0)
    try:
        k.ioctl(vcpu, 0xAEFF, 0)  # an unknown vCPU ioctl
    except OSError:
        pass


def test_mock_trace_decodes_structs_errors_and_exits():
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
    import vmm_loop as V

    buf = io.StringIO()
    with kmock.Kernel(trace=buf) as k:
        vmm = V.Vmm(k)
        vmm.enable_map_gpa_range_exit()
        vmm.add_ram(0, 1 << 32, 2 << 20)
        vcpu = vmm.create_vcpu(0)
        guest = k.vm(vmm.vm_fd).vcpus[0].guest
        guest.write(1 << 32, b"x", private=True)
        guest.hlt()
        V.run_until_halt(vmm, vcpu)
        with pytest.raises(OSError):
            k.ioctl(vmm.vm_fd, K.KVM_CREATE_VCPU, 0)  # EEXIST
    header, recs = _records(buf)
    assert header["kernel"] == "mock" and header["profile"] == "linux-6.18"
    assert [r["i"] for r in recs] == list(range(len(recs)))
    region = next(r for r in recs if r.get("request") == "KVM_SET_USER_MEMORY_REGION2")
    assert region["arg"]["struct"] == "kvm_userspace_memory_region2"
    assert region["arg"]["fields"]["guest_phys_addr"] == 1 << 32
    assert region["arg"]["fields"]["flags"] == K.KVM_MEM_GUEST_MEMFD
    runs = [r for r in recs if r.get("request") == "KVM_RUN"]
    assert [r["exit"]["name"] for r in runs] == ["KVM_EXIT_MEMORY_FAULT", "KVM_EXIT_HLT"]
    assert runs[0]["errname"] == "EFAULT" and runs[1]["result"] == 0
    eexist = [r for r in recs if r.get("errname") == "EEXIST"]
    assert eexist and eexist[0]["request"] == "KVM_CREATE_VCPU"


def test_trace_is_off_by_default_and_costs_no_syscall_path():
    k = kmock.Kernel()
    assert k.trace is None and not k._traced
    k.close_all()


def test_mock_trace_replays_without_divergence(tmp_path):
    path = tmp_path / "mock.jsonl"
    with kmock.Kernel("linux-6.18", trace=str(path)) as k:
        _upstream_calls(k)
    n, div = replay.replay(path)
    assert div is None and n > 10


def test_replay_reports_the_first_divergence(tmp_path):
    path = tmp_path / "t.jsonl"
    with kmock.Kernel("linux-6.18", trace=str(path)) as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        vm = k.ioctl(kvm, K.KVM_CREATE_VM, K.KVM_X86_SW_PROTECTED_VM)
        k.ioctl(vm, K.KVM_CREATE_GUEST_MEMFD, K.kvm_create_guest_memfd(size=P))
    # linux-6.18's software-protected VM type is not in the host profile's VM types
    n, div = replay.replay(path, profile="gmem-attributes-v8")
    assert div is None
    lines = path.read_text().splitlines()
    rec = json.loads(lines[2])
    rec["errno"], rec["errname"] = 22, "EINVAL"  # pretend the kernel refused the VM type
    del rec["result"]
    lines[2] = json.dumps(rec)
    path.write_text("\n".join(lines) + "\n")
    n, div = replay.replay(path)
    assert n == 1 and div.index == 1 and "KVM_CREATE_VM" in div.call
    assert div.expected == "error EINVAL" and div.got == "returns <fd>"


def test_replay_refuses_what_is_not_a_trace(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"hello": 1}\n')
    with pytest.raises(ValueError):
        replay.replay(p)


@pytest.mark.skipif(not os.access("/dev/kvm", os.R_OK | os.W_OK), reason="no usable /dev/kvm")
def test_host_trace_replays_on_the_mock_without_divergence(tmp_path):
    path = tmp_path / "host.jsonl"
    h = kmock.HostKernel(trace=str(path))
    try:
        _upstream_calls(h)
    finally:
        h.close_all()
    header, recs = trace.read(path)
    assert header["kernel"] == "host" and len(recs) >= 12
    assert any(r.get("errname") == "EINVAL" for r in recs)
    n, div = replay.replay(path)  # profile host: probed from this /dev/kvm
    assert div is None, str(div)
    assert n == len(recs)


def test_trace_names_and_decodes_the_architectures_ioctls():
    """The architectures' UAPI (kmock.uapi.tdx/sev/arm64/cca) names their ioctls in a
    trace, every CCA revision's number included; a struct is matched by its name, never by
    a shared word such as "set" or "get"."""
    from kmock import trace
    from kmock.uapi import arm64, cca, kvm, sev

    names = trace.ioctl_names()
    for rev in cca.REVISIONS.values():
        assert names[rev["KVM_ARM_RMI_POPULATE"]] == "KVM_ARM_RMI_POPULATE"
        assert trace.struct_for(rev["KVM_ARM_RMI_POPULATE"]) is cca.kvm_arm_rmi_populate
    assert names[sev.SEV_ISSUE_CMD] == "SEV_ISSUE_CMD"
    assert trace.struct_for(arm64.KVM_SET_ONE_REG).__name__ == "kvm_one_reg"
    assert trace.struct_for(arm64.KVM_ARM_PREFERRED_TARGET).__name__ == "kvm_vcpu_init"
    assert trace.struct_for(kvm.KVM_GET_SUPPORTED_CPUID).__name__ == "kvm_cpuid2"
    # the generic modules keep their own: the architecture modules never displace them
    assert names[kvm.KVM_MEMORY_ENCRYPT_OP] == "KVM_MEMORY_ENCRYPT_OP"


def test_trace_records_a_call_made_while_another_thread_is_inside_one():
    """While one thread is inside a traced call, another thread's calls are traced too
    (a VMM's main thread converts while its vCPU threads sit in KVM_RUN)."""
    import threading

    from kmock.hookspecs import hookimpl
    from kmock.uapi.ioctl import _IO

    BLOCK = _IO(0xAE, 0xF0)  # a test-only ioctl of /dev/kvm that waits
    inside, release = threading.Event(), threading.Event()

    class Blocker:
        @hookimpl
        def kmock_ioctls(self, kernel, file_type):
            if file_type != "kvm":
                return {}

            def block(f, arg):
                inside.set()
                release.wait(10)
                return 0

            return {BLOCK: block}

    buf = io.StringIO()
    with kmock.Kernel(trace=buf, plugins=[Blocker()]) as k:
        kvm = k.open("/dev/kvm", os.O_RDWR)
        t = threading.Thread(target=k.ioctl, args=(kvm, BLOCK, 0))
        t.start()
        assert inside.wait(10)
        k.ioctl(kvm, K.KVM_CHECK_EXTENSION, K.KVM_CAP_GUEST_MEMFD)  # while t is inside
        release.set()
        t.join()
    calls = [r["nr"] for r in _records(buf)[1] if r.get("call") == "ioctl"]
    assert sorted(calls) == sorted([BLOCK, K.KVM_CHECK_EXTENSION])
