"""The os/fcntl/mmap/ctypes VMM of examples/ runs unchanged under the fixture."""

import importlib.util
import pathlib
import sys

import pytest

from kmock.uapi import kvm as K

EXAMPLE = pathlib.Path(__file__).parents[2] / "examples" / "vmm_os.py"


def _load():
    spec = importlib.util.spec_from_file_location("vmm_os_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # a module the patcher can find, as any imported VMM
    spec.loader.exec_module(mod)
    return mod


vmm_os = _load()


def test_unmodified_vmm_boots_a_guest_that_converts_memory(kmock):
    vmm = vmm_os.Vmm()
    gpa = vmm.ram_gpa
    guest = kmock.vm(vmm.vm).vcpus[0].guest  # kmock only: what the guest does
    guest.write(gpa, b"secret", private=True)  # memory fault -> convert to private
    guest.map_gpa_range(gpa + 4096, 2, private=True)
    guest.map_gpa_range(gpa + 4096, 1, private=False)  # shared again: PUNCH_HOLE via libc
    guest.outb(0xE9, ord("!"))
    guest.hlt()
    vmm.run()
    assert vmm.console == b"!"
    assert vmm.conversions == [(gpa, 4096, True), (gpa + 4096, 8192, True),
                               (gpa + 4096, 4096, False)]
    g = kmock.file(vmm.gmem).inode
    assert g.allocated.get(0) == 1  # the guest's private write allocated page 0
    assert g.allocated.get(1) == 0  # page 1 was punched by the libc fallocate
    vm = kmock.vm(vmm.vm)
    assert vm.gfn_is_private((gpa >> 12) + 2) and not vm.gfn_is_private((gpa >> 12) + 1)
    vmm.close()


def test_guest_memfd_fd_cannot_be_used_behind_kmocks_back(kmock):
    import mmap
    import os

    vmm = vmm_os.Vmm()
    # posix_fallocate on guest_memfd: fallocate(mode 0) is EOPNOTSUPP, glibc's emulation
    # then fails on the first write (ESPIPE): nothing is allocated
    with pytest.raises(OSError) as e:
        os.posix_fallocate(vmm.gmem, 0, 4096)
    assert e.value.errno == 29
    assert kmock.file(vmm.gmem).inode.allocated.count(1) == 0
    # no GUEST_MEMFD_FLAG_MMAP: ENODEV, as kvm_gmem_mmap
    with pytest.raises(OSError) as e:
        mmap.mmap(vmm.gmem, 4096)
    assert e.value.errno == 19
    vmm.close()


def test_ioctl_on_closed_and_reused_fd_reaches_the_real_file(kmock, tmp_path):
    import fcntl
    import os

    kvm = os.open("/dev/kvm", os.O_RDWR)
    assert fcntl.ioctl(kvm, K.KVM_GET_API_VERSION, 0) == 12
    os.close(kvm)
    p = tmp_path / "f"
    p.write_bytes(b"x")
    fd = os.open(str(p), os.O_RDONLY)  # likely the same number
    with pytest.raises(OSError) as e:
        fcntl.ioctl(fd, K.KVM_GET_API_VERSION, 0)
    assert e.value.errno == 25  # ENOTTY from the real file, not 12 from kmock
    os.close(fd)


def test_the_example_is_plain_os_code_that_the_real_kernel_accepts():
    """Without the fixture the example talks to the real /dev/kvm (where there is one)."""
    import os

    if not os.path.exists("/dev/kvm"):
        pytest.skip("no /dev/kvm")
    try:
        vmm = vmm_os.Vmm(vm_type=K.KVM_X86_DEFAULT_VM)  # SW_PROTECTED is often disabled
    except OSError as e:
        pytest.skip(f"the host kernel refused the set-up: {e}")
    try:
        st = os.fstat(vmm.gmem)
        assert st.st_size == vmm.ram_size  # a real guest_memfd
    finally:
        vmm.close()
