"""A long fuzz run that counts (issue 14 part 6); not part of the default test suite.

``python3 -m kmock.benchmarks.fuzz_long [--calls N] [--workers W] [--threads T] [--seed S]``
(or ``run(quick=False, out=print)``) drives N random syscalls (default 10**6) through
the mock, over every profile and every platform this kmock has (platform plugins that
are not installed are skipped and named), on every file type: /dev/kvm, VMs of each
VM type, vCPUs, guest_memfds of every flag combination, /dev/iommu, VFIO cdevs, plugin
devices, mappings. Calls mix random ioctl numbers and random bytes with well-formed
sequences (guest_memfd + memslot + attributes + KVM_RUN of a guest script, iommufd
IOAS + MAP_FILE + DMA), from T threads at once.

Work is split into chunks; each chunk runs in a forked child, so a real signal (a
SIGSEGV or SIGBUS that reached the process) is counted, not fatal. Reported:

* non-OSError exceptions (target 0): anything but OSError from a syscall, except
  kmock.SigBus from an access through a mapping and kmock.DmaFault from a DMA (what
  the hardware would do), and TypeError/OverflowError where the os/fcntl function
  raises them for that argument (an out-of-range int);
* real signals (target 0): chunks whose child died of a signal;
* fds leaked after close_all (target 0): descriptors of the process open after
  ``close_all()`` that were not open before the Kernel was made (its own two, the
  fd-table placeholder and the SIGBUS memfd, are closed when it is collected and
  are not counted);
* RSS growth: the resident set of each child from its first round to its last.
"""

import ctypes
import errno
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback

P = 4096
U64 = (1 << 64) - 1
CHUNK = 20000  # calls per forked child
ROUND = 400  # calls per Kernel (then close_all and the fd check)

_SCRATCH_SIZE = 1 << 16
_INTERESTING = [0, 1, 2, 3, 7, P - 1, P, P + 1, 2 * P, 4 * P, 16 * P, 1 << 21, 1 << 32,
                (1 << 32) + P, (1 << 52) - P, 1 << 62, (1 << 63) - 1, 1 << 63, U64, -1, -P]


def _open_fds():
    return set(int(n) for n in os.listdir("/proc/self/fd"))


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _requests():
    """Every ioctl number kmock's uapi modules name."""
    from ..uapi import gmem, iommufd, kvm, vfio

    out = set()
    for mod in (kvm, iommufd, vfio, gmem):
        for name, v in vars(mod).items():
            if name.isupper() and isinstance(v, int) and v > 0xFFFF and v <= 0xFFFFFFFF:
                out.add(v)
    return sorted(out)


def _structs():
    import ctypes as c

    from ..uapi import iommufd, kvm, vfio

    out = []
    for mod in (kvm, iommufd, vfio):
        for v in vars(mod).values():
            if isinstance(v, type) and issubclass(v, c.Structure) and 0 < c.sizeof(v) <= 1024:
                out.append(v)
    return out


class Fuzzer:
    """One kernel's worth of random calls; counts what comes back."""

    def __init__(self, rng, stats, scratch, noaccess, requests, structs):
        self.rng = rng
        self.stats = stats
        self.scratch = scratch
        self.noaccess = noaccess
        self.requests = requests
        self.structs = structs
        self.lock = threading.Lock()

    # --- values ------------------------------------------------------------------------------

    def pick(self, items, pop=False):
        """A random element of a list the other threads change too (None if empty)."""
        try:
            i = self.rng.randrange(len(items))
            return items.pop(i) if pop else items[i]
        except (IndexError, ValueError):
            return None

    def int_(self):
        r = self.rng.random()
        if r < 0.5:
            return self.rng.choice(_INTERESTING)
        if r < 0.8:
            return self.rng.randrange(0, 64) * P
        return self.rng.randrange(-(1 << 63), 1 << 63)

    def address(self):
        """A user address where nothing of this process lives, or the scratch buffer."""
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            return rng.randrange(0, 0x10000)
        if r < 0.5:
            return rng.randrange(1 << 47, U64)
        if r < 0.7:
            return self.noaccess + rng.randrange(0, (1 << 20) - 64)
        return ctypes.addressof(self.scratch) + rng.randrange(0, _SCRATCH_SIZE // 2)

    def arg(self):
        rng = self.rng
        r = rng.random()
        if r < 0.3:
            return self.address()
        if r < 0.45:
            return rng.randbytes(rng.randrange(0, 300))
        if r < 0.6:
            return bytearray(rng.randbytes(rng.randrange(0, 300)))
        cls = rng.choice(self.structs)
        n = ctypes.sizeof(cls)
        if r < 0.85:  # fields from interesting values
            words = b"".join((rng.choice(_INTERESTING) & U64).to_bytes(8, "little")
                             for _ in range((n + 7) // 8))
            return cls.from_buffer_copy(words[:n])
        return cls.from_buffer_copy(rng.randbytes(n))

    # --- the calls -----------------------------------------------------------------------------

    def call(self, what, fn, *args, allowed=()):
        """Run one call; count its outcome."""
        st = self.stats
        try:
            r = fn(*args)
        except OSError as e:
            st["oserror"] += 1
            key = errno.errorcode.get(e.errno, str(e.errno))
            st["errnos"][key] = st["errnos"].get(key, 0) + 1
            return None
        except allowed as e:
            key = type(e).__name__
            st["allowed"][key] = st["allowed"].get(key, 0) + 1
            return None
        except Exception as e:  # what this run is looking for
            st["unexpected"] += 1
            key = f"{what}: {type(e).__name__}: {str(e)[:120]}"
            if len(st["unexpected_kinds"]) < 50 or key in st["unexpected_kinds"]:
                st["unexpected_kinds"][key] = st["unexpected_kinds"].get(key, 0) + 1
                if key not in st["tracebacks"] and len(st["tracebacks"]) < 10:
                    st["tracebacks"][key] = traceback.format_exc()[-2000:]
            return None
        st["ok"] += 1
        return r

    def setup(self, k, fds, maps, devs):
        """Well-formed objects to aim at: every device node, VMs of each type, vCPUs,
        guest_memfds of each flag combination with memslots, an IOAS with a device."""
        from ..uapi import kvm as K

        rng = self.rng
        for path in list(k.devices):
            fd = self.call("open", k.open, path, os.O_RDWR | os.O_CLOEXEC)
            if fd is not None:
                fds.append(fd)
        kvm = self.call("open", k.open, "/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
        if kvm is None:
            return
        fds.append(kvm)
        for t in list(k.vm_types):
            vm = self.call("create_vm", k.ioctl, kvm, K.KVM_CREATE_VM, t)
            if vm is None:
                continue
            fds.append(vm)
            vcpu = self.call("create_vcpu", k.ioctl, vm, K.KVM_CREATE_VCPU, 0)
            if vcpu is not None:
                fds.append(vcpu)
            for flags in (0, K.GUEST_MEMFD_FLAG_MMAP,
                          K.GUEST_MEMFD_FLAG_MMAP | K.GUEST_MEMFD_FLAG_INIT_SHARED):
                g = self.call("create_gmem", k.ioctl, vm, K.KVM_CREATE_GUEST_MEMFD,
                              K.kvm_create_guest_memfd(size=16 * P, flags=flags))
                if g is None:
                    continue
                fds.append(g)
                slot = len(fds) & 0x7F
                self.call("memslot", k.ioctl, vm, K.KVM_SET_USER_MEMORY_REGION2,
                          K.kvm_userspace_memory_region2(
                              slot=slot, flags=K.KVM_MEM_GUEST_MEMFD,
                              guest_phys_addr=(1 << 32) + slot * 16 * P, memory_size=16 * P,
                              guest_memfd=g))
                m = self.call("mmap", k.mmap, g, 16 * P, 3, 1, 0)
                if m is not None:
                    maps.append(m)
        if rng.random() < 0.7 and "/dev/iommu" in k.devices:
            self._iommu(k, fds, devs)

    def _iommu(self, k, fds, devs):
        from ..uapi import iommufd as I
        from ..uapi import vfio as V

        dev = self.call("add_vfio_device", k.add_vfio_device)
        if dev is None:
            return
        devs.append(dev)
        ictx = self.call("open", k.open, "/dev/iommu", os.O_RDWR | os.O_CLOEXEC)
        cdev = self.call("open", k.open, dev.path, os.O_RDWR | os.O_CLOEXEC)
        if ictx is None or cdev is None:
            return
        fds.extend((ictx, cdev))
        self.call("bind", k.ioctl, cdev, V.VFIO_DEVICE_BIND_IOMMUFD,
                  V.vfio_device_bind_iommufd(argsz=16, iommufd=ictx))
        alloc = I.iommu_ioas_alloc(size=ctypes.sizeof(I.iommu_ioas_alloc))
        if self.call("ioas_alloc", k.ioctl, ictx, I.IOMMU_IOAS_ALLOC, alloc) is None:
            return
        self.ioas = alloc.out_ioas_id
        self.ictx = ictx
        self.call("attach", k.ioctl, cdev, V.VFIO_DEVICE_ATTACH_IOMMUFD_PT,
                  V.vfio_device_attach_iommufd_pt(argsz=16, pt_id=alloc.out_ioas_id))
        memfd = self.call("memfd", k.memfd_create, "fuzz", os.MFD_CLOEXEC)
        if memfd is not None:
            self.call("ftruncate", k.ftruncate, memfd, 64 * P)
            self.memfd = memfd

    def one(self, k, fds, maps, devs):
        """One random call."""
        from ..uapi import iommufd as I
        from ..uapi import kvm as K

        rng = self.rng
        r = rng.random()
        fd = self.pick(fds) if rng.random() < 0.9 else None
        if fd is None:
            fd = rng.choice([-1, 0, 1, 2, 1 << 20])
        if r < 0.45:
            req = rng.choice(self.requests) if rng.random() < 0.7 else rng.randrange(0, 1 << 32)
            arg = self.arg()
            ok = (OverflowError,) if type(arg) is int and not -(1 << 63) <= arg <= U64 else ()
            self.call("ioctl", k.ioctl, fd, req, arg, rng.random() < 0.9, allowed=ok)
        elif r < 0.55:
            ok = (OverflowError,)  # an off_t or int argument out of range, as os. raises
            self.call("fallocate", k.fallocate, fd, rng.choice([0, 1, 3, 2, 0x10, 0x40]),
                      self.int_(), self.int_(), allowed=ok)
        elif r < 0.6:
            m = self.call("mmap", k.mmap, fd, rng.choice([P, 4 * P, 16 * P, 3 * P, 0, 1 << 40]),
                          rng.choice([0, 1, 3, 7]), rng.choice([1, 2, 3]),
                          rng.choice([0, P, 4 * P, 1, -P]), allowed=(OverflowError,))
            if m is not None:
                maps.append(m)
        elif r < 0.72 and maps:
            m = self.pick(maps)
            if m is None:
                return
            off = rng.randrange(0, 20 * P)
            from .. import SigBus

            if rng.random() < 0.5:
                self.call("map_read", m.__getitem__, slice(off, off + rng.randrange(1, 2 * P)),
                          allowed=(SigBus, IndexError, ValueError))  # closed: ValueError
            else:
                n = rng.randrange(1, 64)
                self.call("map_write", m.__setitem__, slice(off, off + n), b"\xA5" * n,
                          allowed=(SigBus, IndexError, ValueError, TypeError))
        elif r < 0.78:
            self._guest(k, fds)
        elif r < 0.84 and getattr(self, "ictx", None) is not None:
            self._iommu_op(k, devs, I)
        elif r < 0.88:
            name = rng.choice(["fstat", "fsync", "dup", "read", "pread", "lseek", "pwrite"])
            args = {"fstat": (), "fsync": (), "dup": (), "read": (rng.randrange(0, 64),),
                    "pread": (rng.randrange(0, 64), rng.randrange(0, 1 << 20)),
                    "lseek": (self.int_() & 0xFFFF, rng.randrange(0, 5)),
                    "pwrite": (b"x", rng.randrange(0, 1 << 20))}[name]
            new = self.call(name, getattr(k, name), fd, *args, allowed=(OverflowError,))
            if name == "dup" and isinstance(new, int):
                fds.append(new)
        elif r < 0.92:
            req = rng.choice([K.KVM_SET_MEMORY_ATTRIBUTES, K.KVM_PRE_FAULT_MEMORY])
            if req == K.KVM_SET_MEMORY_ATTRIBUTES:
                a = K.kvm_memory_attributes(address=(1 << 32) + rng.randrange(0, 64) * P,
                                            size=rng.choice([P, 4 * P, 16 * P]),
                                            attributes=rng.choice([0, 8]))
            else:
                a = K.kvm_pre_fault_memory(gpa=(1 << 32) + rng.randrange(0, 64) * P,
                                           size=rng.choice([P, 4 * P]))
            self.call("well_formed", k.ioctl, fd, req, a)
        elif r < 0.95:
            victim = self.pick(fds, pop=True) if rng.random() < 0.5 else None
            if victim is not None:
                self.call("close", k.close, victim)
        elif r < 0.97 and maps:
            m = self.pick(maps, pop=True)
            if m is not None:
                self.call("munmap", m.close)
        else:
            self.call("punch", k.fallocate, fd, 3, rng.randrange(0, 16) * P, P,
                      allowed=(OverflowError,))

    def _guest(self, k, fds):
        from ..uapi import kvm as K

        rng = self.rng
        vcpus = [f for f in fds if getattr(k.fdtable.get(f), "file_type", None) == "vcpu"]
        if not vcpus:
            return
        fd = self.pick(vcpus)
        f = k.fdtable.get(fd)
        if f is None:
            return
        vcpu = getattr(f, "vcpu", None)
        script = getattr(vcpu, "guest", None)
        if script is None:
            return
        gpa = (1 << 32) + rng.randrange(0, 48) * P + rng.choice([0, 8, P - 4])
        kind = rng.random()
        try:
            if kind < 0.3:
                script.read(gpa, rng.choice([1, 8, P, 2 * P]), rng.choice([None, True, False]))
            elif kind < 0.55:
                script.write(gpa, b"\x5A" * rng.choice([1, 8, 100]), rng.choice([None, True, False]))
            elif kind < 0.7:
                script.map_gpa_range(gpa & ~(P - 1), rng.choice([1, 4]), rng.random() < 0.5)
            elif kind < 0.85:
                script.outb(0x80, rng.randrange(256))
            else:
                script.hlt()
        except Exception as e:  # a documented KmockUsageError would be a fuzz bug here
            self.stats["unexpected"] += 1
            key = f"guest script: {type(e).__name__}: {e}"[:160]
            self.stats["unexpected_kinds"][key] = self.stats["unexpected_kinds"].get(key, 0) + 1
            return
        self.call("KVM_RUN", k.ioctl, fd, K.KVM_RUN, 0)
        if rng.random() < 0.1:
            script.clear()

    def _iommu_op(self, k, devs, I):
        from .. import DmaFault

        rng = self.rng
        if rng.random() < 0.5 and getattr(self, "memfd", None) is not None:
            m = I.iommu_ioas_map_file(
                size=ctypes.sizeof(I.iommu_ioas_map_file), ioas_id=self.ioas, fd=self.memfd,
                flags=I.IOMMU_IOAS_MAP_READABLE | I.IOMMU_IOAS_MAP_WRITEABLE,
                start=rng.randrange(0, 64) * P, length=rng.choice([P, 2 * P, 1, 128 * P]))
            if self.call("map_file", k.ioctl, self.ictx, I.IOMMU_IOAS_MAP_FILE, m) is not None:
                self.iovas = getattr(self, "iovas", [])[-16:] + [m.iova]
        elif getattr(self, "iovas", None):
            iova = self.pick(self.iovas)
            if iova is None:
                return
            if rng.random() < 0.3:
                u = I.iommu_ioas_unmap(size=ctypes.sizeof(I.iommu_ioas_unmap), ioas_id=self.ioas,
                                       iova=iova, length=P)
                self.call("unmap", k.ioctl, self.ictx, I.IOMMU_IOAS_UNMAP, u)
            elif devs:
                dev = self.pick(devs)
                self.call("dma", dev.dma_read, iova + rng.randrange(0, 2) * P, rng.randrange(0, 64),
                          allowed=(DmaFault,))


def _kernels():
    """(label, factory) for every profile x platform this kmock can build."""
    from .. import profiles
    from ..testing.platforms import PLATFORMS, PlatformError, kernel_for

    from .. import Kernel

    base = Kernel()
    extra = [p for part in base.pm.hook.kmock_profiles() for p in (part or ())]
    base.close_all()
    out, missing = [], []
    for name in profiles.names(extra):
        if name == "host" and not os.path.exists("/dev/kvm"):
            continue
        for plat in PLATFORMS:
            try:
                k = kernel_for(name, plat)
            except (PlatformError, ValueError):
                missing.append(f"{name}/{plat}")
                continue
            k.close_all()
            out.append((f"{name}/{plat}", (name, plat)))
    return out, missing


def _new_stats():
    return {"calls": 0, "ok": 0, "oserror": 0, "unexpected": 0, "errnos": {}, "allowed": {},
            "unexpected_kinds": {}, "tracebacks": {}, "leaked_fds": 0, "leaks": [],
            "rss_first": None, "rss_last": None, "kernels": 0, "fuzzer_errors": {}}


def _chunk(seed, calls, threads, combos):
    """One child's work: ``calls`` random calls on a sequence of kernels."""
    from .. import _libc
    from ..testing.platforms import kernel_for

    rng = random.Random(seed)
    stats = _new_stats()
    scratch = ctypes.create_string_buffer(_SCRATCH_SIZE)
    noaccess = _libc.reserve(1 << 20)
    requests, structs = _requests(), _structs()
    done = 0
    while done < calls:
        label, (profile, plat) = combos[rng.randrange(len(combos))]
        gc.collect()
        before = _open_fds()
        k = kernel_for(profile, plat)
        own = {k.fdtable.placeholder, k.sigbus_memfd}
        n = min(ROUND, calls - done)
        fuzzers = [Fuzzer(random.Random(rng.random()), stats, scratch, noaccess, requests, structs)
                   for _ in range(max(1, threads))]
        fds, maps, devs = [], [], []
        fuzzers[0].setup(k, fds, maps, devs)
        for f in fuzzers[1:]:
            f.ictx, f.ioas = getattr(fuzzers[0], "ictx", None), getattr(fuzzers[0], "ioas", None)
            f.memfd = getattr(fuzzers[0], "memfd", None)

        def work(f, count):
            for _ in range(count):
                try:
                    f.one(k, fds, maps, devs)
                except Exception as e:  # outside any syscall: the fuzzer's own bug
                    key = f"fuzzer: {type(e).__name__}: {e}"[:160]
                    stats["fuzzer_errors"][key] = stats["fuzzer_errors"].get(key, 0) + 1

        per = n // len(fuzzers)
        ts = [threading.Thread(target=work, args=(f, per)) for f in fuzzers[1:]]
        for t in ts:
            t.start()
        work(fuzzers[0], n - per * (len(fuzzers) - 1))
        for t in ts:
            t.join()
        stats["calls"] += n
        done += n
        fuzzers[0].call("close_all", k.close_all)  # an exception here counts, too
        leaked = _open_fds() - before - own
        # an fd the round opened that close_all left open
        leaked = {fd for fd in leaked if os.path.exists(f"/proc/self/fd/{fd}")}
        if leaked:
            stats["leaked_fds"] += len(leaked)
            if len(stats["leaks"]) < 10:
                stats["leaks"].append({"kernel": label, "fds": sorted(leaked)[:8], "targets": [
                    os.readlink(f"/proc/self/fd/{fd}") for fd in sorted(leaked)[:8]
                    if os.path.exists(f"/proc/self/fd/{fd}")]})
            for fd in leaked:  # do not let one leak count again in later rounds
                try:
                    os.close(fd)
                except OSError:
                    pass
        del k, fuzzers, fds, maps, devs
        stats["kernels"] += 1
        rss = _rss()
        if stats["rss_first"] is None:
            stats["rss_first"] = rss
        stats["rss_last"] = rss
    return stats


def _merge(total, part):
    for key in ("calls", "ok", "oserror", "unexpected", "leaked_fds", "kernels"):
        total[key] += part[key]
    for key in ("errnos", "allowed", "unexpected_kinds", "fuzzer_errors"):
        for k, v in part[key].items():
            total[key][k] = total[key].get(k, 0) + v
    for k, v in part["tracebacks"].items():
        total["tracebacks"].setdefault(k, v)
    total["leaks"].extend(part["leaks"][:10 - len(total["leaks"])])
    if part["rss_first"] is not None:
        total["rss_growth"].append(part["rss_last"] - part["rss_first"])


def _fork_child(seed, calls, threads, combos, path):
    """Fork a child for one chunk, writing its stats as JSON to ``path``; returns its pid.
    Forked from the main thread (a fork from another thread of a threaded parent may
    leave the child's interpreter broken)."""
    pid = os.fork()
    if pid == 0:  # the child
        code = 0
        try:
            data = json.dumps(_chunk(seed, calls, threads, combos))
        except BaseException:
            data = json.dumps({"crash": f"seed {seed}: " + traceback.format_exc()[-3000:]})
            code = 1
        with open(path, "w") as f:
            f.write(data)
        os._exit(code)
    return pid


def _child_result(path, status):
    """(stats or None, signal number or None) of a child that ended with ``status``."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    try:
        with open(path) as f:
            return json.load(f), None
    except (OSError, ValueError):
        return {"crash": f"child exited with status {status} without a result"}, None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def run(quick=False, out=print, calls=None, workers=2, threads=2, seed=None):
    """Run the fuzz; print the report and return the totals (a dict)."""
    if calls is None:
        calls = 4000 if quick else 10 ** 6
    seed = int(time.time()) if seed is None else seed
    combos, missing = _kernels()
    chunk = min(CHUNK, max(ROUND, calls // max(1, workers)))
    jobs = [(seed * 1000003 + i, min(chunk, calls - i * chunk))
            for i in range((calls + chunk - 1) // chunk)]
    total = _new_stats()
    total.update(rss_growth=[], signals={}, crashes=[])
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="kmock-fuzz-")
    pending = list(jobs)
    running = {}  # pid -> result path
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                s, n = pending.pop(0)
                path = os.path.join(tmp, f"{s}.json")
                running[_fork_child(s, n, threads, combos, path)] = path
            pid, status = os.wait()
            path = running.pop(pid, None)
            if path is None:
                continue
            stats, sig = _child_result(path, status)
            if sig is not None:
                name = f"signal {sig}"
                total["signals"][name] = total["signals"].get(name, 0) + 1
            elif "crash" in stats:
                total["crashes"].append(stats["crash"])
            else:
                _merge(total, stats)
    finally:
        for pid in running:
            os.kill(pid, 9)
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - t0
    total["elapsed_s"] = elapsed
    total["seed"] = seed
    total["platforms"] = [c[0] for c in combos]
    total["missing_platforms"] = missing
    growth = total["rss_growth"]
    out(f"kmock fuzz: {total['calls']} calls in {elapsed:.0f}s ({total['calls'] / max(elapsed, 1e-9):.0f}/s), "
        f"seed {seed}, {len(jobs)} chunks in forked children ({workers} at a time, {threads} "
        f"threads each), {total['kernels']} kernels")
    out(f"  kernels: {', '.join(total['platforms'])}")
    if missing:
        out(f"  not built (no plugin here, or another architecture): {', '.join(missing)}")
    out(f"  outcomes: {total['ok']} ok, {total['oserror']} OSError, allowed "
        f"{dict(sorted(total['allowed'].items()))}")
    top = sorted(total["errnos"].items(), key=lambda kv: -kv[1])[:8]
    out(f"  top errnos: {', '.join(f'{k} {v}' for k, v in top)}")
    out(f"  non-OSError exceptions: {total['unexpected']} (target 0)")
    for k, v in sorted(total["unexpected_kinds"].items(), key=lambda kv: -kv[1])[:10]:
        out(f"    {v:6d}  {k}")
    out(f"  real signals: {sum(total['signals'].values())} (target 0) {total['signals'] or ''}")
    out(f"  crashed chunks: {len(total['crashes'])}; fuzzer errors (its own bugs): "
        f"{total['fuzzer_errors'] or 0}")
    for c in total["crashes"][:3]:
        out("    " + c.strip().splitlines()[-1])
    out(f"  fds leaked after close_all: {total['leaked_fds']} (target 0)")
    for leak in total["leaks"][:5]:
        out(f"    {leak}")
    if growth:
        out(f"  RSS growth per child (first to last round): max {max(growth) / 2**20:.1f} MiB, "
            f"median {sorted(growth)[len(growth) // 2] / 2**20:.1f} MiB over {len(growth)} children")
    return total


def main(argv=None):
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=10 ** 6)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--tracebacks", action="store_true", help="print the first tracebacks")
    a = p.parse_args(argv)
    total = run(calls=a.calls, workers=a.workers, threads=a.threads, seed=a.seed)
    if a.tracebacks:
        for k, tb in total["tracebacks"].items():
            print(f"--- {k}\n{tb}")
        for c in total["crashes"]:
            print(f"--- crashed chunk\n{c}")
    bad = total["unexpected"] or total["signals"] or total["leaked_fds"] or total["crashes"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
