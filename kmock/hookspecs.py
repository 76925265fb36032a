"""The plugin contract: every hook an architecture (or tracing) plugin may implement.

Plugins are found through the ``kmock.plugins`` entry-point group and registered
on the ``kmock`` PluginManager of each Kernel (``Kernel(plugins=[...])`` registers
an explicit list instead, as tests do). ``plugins/kmock_sw_protected`` is the
template.

Rules for every hook:

* Hooks run when tables are built (a Kernel is created) or once per *operation*
  (an ioctl, a conversion, a VM creation), never once per page: per-page work
  belongs in the compiled core.
* A hook refuses an operation by raising ``OSError(errno)``; the caller has not
  changed any state yet when a ``validate``/``veto`` hook runs, so nothing is left
  half-done.
* Hooks must not call back into the Kernel's syscall API (``Kernel.ioctl`` etc.):
  they receive the objects they need.

The hooks that dispatch ioctls return *tables*; the Kernel merges them once into
per-file-type dispatch dicts, so no hook chain is walked per call.
"""

import pluggy

hookspec = pluggy.HookspecMarker("kmock")
hookimpl = pluggy.HookimplMarker("kmock")


# --- declaring what the architecture offers (called once per Kernel) ----------------


@hookspec
def kmock_vm_types(kernel):
    """Return a list of :class:`kmock.kvm.vmtype.VmType` objects this plugin implements.

    A VmType names the ``KVM_CREATE_VM`` type number and answers the per-VM-type
    questions (private memory, INIT_SHARED support, pre-fault, which guest accesses
    are private, capability overrides, make_shared/make_private, hardware tables).
    The profile decides which declared types the platform actually offers.
    Called once when the Kernel is created.
    """


@hookspec
def kmock_ioctls(kernel, file_type):
    """Return ``{request_number: handler}`` to add ioctls to a file type.

    ``file_type`` is one of ``"kvm"`` (/dev/kvm), ``"vm"``, ``"vcpu"``, ``"gmem"``.
    ``handler(file, arg)`` receives the open file object and the raw ioctl argument
    (use ``kmock.kernel.copy_from_user``/``copy_to_user`` for structs) and returns
    the ioctl's int result or raises OSError. A plugin adding KVM_MEMORY_ENCRYPT_OP
    sub-commands registers one handler for that request on ``"vm"`` (and
    ``"vcpu"``) and dispatches on the sub-command id itself. Called once per file
    type when the Kernel is created; later plugins override earlier ones for the
    same request.
    """


# --- validation of object creation (once per operation) ---------------------------


@hookspec
def kmock_vm_init(kernel, vm):
    """Called after a VM object is built for KVM_CREATE_VM and before its fd exists.

    Set up architecture state on ``vm.arch`` (the plugin owns it: RMP, S-EPT, RTT
    tables usually as kmock.mm RangeMaps/PageTables), or raise OSError to make
    KVM_CREATE_VM fail with that errno.
    """


@hookspec
def kmock_gmem_create(kernel, vm, size, flags):
    """Validate KVM_CREATE_GUEST_MEMFD after the generic flag and size checks.

    Raise OSError to refuse; return nothing. (The generic checks use
    ``VmType.supported_gmem_flags``, so most plugins need not implement this.)
    """


# --- memory: invalidation and conversion (once per operation) -----------------------


@hookspec
def kmock_gmem_invalidate(kernel, gmem, start, end, reason):
    """guest_memfd is taking pages [start, end) (page indexes) away from its users.

    ``reason`` is ``"punch_hole"``, ``"convert_private"``, ``"convert_shared"``,
    ``"release"`` or ``"memory_failure"``. Called between invalidate_begin and
    invalidate_end, after the core zapped stage-2 and host mappings of the range.
    Architecture plugins drop their hardware-table entries here (S-EPT remove,
    RMPUPDATE to shared, RTT data destroy). Must not fail.
    """


@hookspec(firstresult=True)
def kmock_gmem_convert_veto(kernel, gmem, start, end, to_private):
    """Ask the architecture whether a conversion of [start, end) may proceed.

    Return an errno (int) to refuse the whole conversion (nothing has changed yet),
    or None to allow it. Example: TDX Connect refuses to block a TD-DMA-pinned page.
    """


@hookspec
def kmock_gmem_make_shared(kernel, gmem, start, end):
    """The arch callback for a to-shared conversion of allocated pages [start, end).

    Runs after the refcount checks passed and before the new attributes are stored
    (the kernel's kvm_arch_gmem_make_shared). Must not fail.
    """


@hookspec
def kmock_gmem_make_private(kernel, gmem, start, end):
    """The arch callback when private pages [start, end) are first used by the guest
    (the kernel's lazy kvm_arch_gmem_make_private from kvm_gmem_get_pfn)."""


# --- state ---------------------------------------------------------------------------


@hookspec
def kmock_snapshot(kernel, snapshot):
    """Add architecture state to ``snapshot`` (a dict) under the plugin's own key."""


# --- the syscall wrapper (tracing and fault injection) --------------------------------


@hookspec
def kmock_syscall(kernel, name, args):
    """Wraps every syscall of the Kernel's API; implement it with ``wrapper=True``.

    ``name`` is the method name (``"ioctl"``, ``"fallocate"``, ...), ``args`` its
    positional arguments. A wrapper may raise OSError before ``yield`` to inject a
    failure, or inspect/replace the result after it. The Kernel only takes this
    path when at least one plugin implements the hook, so tracing costs nothing
    when unused.
    """
