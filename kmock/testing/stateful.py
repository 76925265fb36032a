"""A RuleBasedStateMachine base for VMM developers: your exit handlers vs random guests.

Subclass ``VmmMachine``, build your VMM in ``setup_vmm`` (under patching: plain
os/fcntl/mmap code reaches the mock) and run one vCPU until HLT in ``run_guest``::

    class MyVmm(VmmMachine):
        profile = "linux-6.18"
        def setup_vmm(self):
            self.vmm = Vmm()                       # your code, unchanged
            return self.vmm.vm, self.vmm.ram_gpa, self.vmm.ram_size
        def run_guest(self):
            self.vmm.run()
        def teardown_vmm(self):
            self.vmm.close()

    TestMyVmm = MyVmm.TestCase

Each step queues a random guest script (accesses, MapGPA-range hypercalls, port I/O;
kmock.testing.strategies.guest_scripts) on vCPU 0 and calls ``run_guest``. After every
step the invariants run: stage-2 agrees with memslots, attributes and guest_memfd
allocation (Stage2.audit) for every VM, and no violation was recorded (set
``allow_violations = True`` to only collect them). ``check_vmm`` is yours to extend.
"""

from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from . import strategies
from .patcher import Patcher
from .platforms import kernel_for


class VmmMachine(RuleBasedStateMachine):
    profile = "linux-6.18"
    platform = None
    settings = {}
    vcpu_id = 0
    max_script = 6
    allow_violations = False

    def __init__(self):
        super().__init__()
        self.kernel = kernel_for(self.profile, self.platform, **self.settings)
        self.patcher = Patcher(self.kernel).start()
        self.vm_fd, self.ram_gpa, self.ram_size = self.setup_vmm()
        self._scripts = strategies.guest_scripts(self.ram_gpa, self.ram_size,
                                                 max_len=self.max_script)

    # --- to override ----------------------------------------------------------------------

    def setup_vmm(self):
        """Build the VMM; return (VM fd, guest RAM gpa, guest RAM size)."""
        raise NotImplementedError

    def run_guest(self):
        """Run vCPU ``vcpu_id`` until the guest halts (your exit handlers)."""
        raise NotImplementedError

    def teardown_vmm(self):
        pass

    def check_vmm(self):
        """Your own invariants (called after kmock's)."""

    # --- the machine ----------------------------------------------------------------------

    @property
    def guest(self):
        return self.kernel.vm(self.vm_fd).vcpus[self.vcpu_id].guest

    @rule(data=strategies.st.data())
    def guest_runs_a_script(self, data):
        script = data.draw(self._scripts, label="guest script")
        guest = self.guest
        for action in script:
            action.apply(guest)
        guest.hlt()
        self.run_guest()

    @invariant()
    def kmock_invariants(self):
        problems = []
        vm = self.kernel.vm(self.vm_fd)
        stage2 = getattr(vm, "stage2", None)
        if stage2 is not None and hasattr(stage2, "audit"):
            problems += stage2.audit(vm)
        if not self.allow_violations and self.kernel.violations:
            problems += [f"violation: {v}" for v in self.kernel.violations]
        assert not problems, "kmock invariants broken:\n" + "\n".join(problems)
        self.check_vmm()

    def teardown(self):
        try:
            self.teardown_vmm()
        finally:
            self.patcher.stop()
            self.kernel.close_all()
