"""The plugin contract: the hooks a plugin may implement, and where the rest lives.

Plugins are found through the ``kmock.plugins`` entry-point group and registered on
the ``kmock`` PluginManager of each Kernel. ``Kernel(plugins=[...])`` adds plugins
to the installed ones; ``Kernel(only_plugins=[...])`` registers exactly the listed
ones (tests of a plugin in isolation). ``plugins/kmock_sw_protected`` is the
smallest plugin; docs/writing-a-plugin.md walks through a whole architecture.

The hooks here declare what a plugin offers. They run once, when a Kernel is
created (or, for ``kmock_snapshot`` / ``kmock_syscall``, once per call of that
Kernel API). Everything an architecture does *per VM* lives on its VM type
(kmock.kvm.vmtype.VmType): its own ioctl tables and KVM_MEMORY_ENCRYPT_OP
sub-commands, lifecycle callbacks (VM init and destroy, vCPU create, memslot
prepare and commit, KVM_RUN entry and exit), guest_memfd callbacks (veto, the
arch step of an invalidation, make_shared / make_private, stage-2 map and zap),
GPA aliases, capability overrides and guest script actions. The core calls those
only for VMs of that type, so no plugin filters by VM type.

Rules for every hook and VmType method:

* Called when tables are built or once per *operation*, never once per page:
  per-page work belongs in the compiled core (kmock.mm).
* A callback refuses an operation by raising ``OSError(errno)`` (or, for a veto,
  returning the errno) before the caller changed anything.
* Hooks must not call back into the Kernel's syscall API (``Kernel.ioctl`` etc.):
  they receive the objects they need. Consequences are recorded with
  ``kernel.violations.record(...)`` (kmock.consequences).

The contract is checked when the Kernel is created (kmock.pluginmanager): an
unknown hook name, a ``kmock_*`` function without ``@hookimpl``, a VM type number
declared twice, a non-int ioctl key and an entry point that fails to load are a
``kmock.errors.PluginError`` naming the plugin.
"""

import pluggy

hookspec = pluggy.HookspecMarker("kmock")
hookimpl = pluggy.HookimplMarker("kmock")


# --- what the architecture offers (called once per Kernel) --------------------------------


@hookspec
def kmock_vm_types(kernel):
    """Return a list of :class:`kmock.kvm.vmtype.VmType` instances this plugin implements.

    The profile's ``platform`` (and, for the host profile, the probed type list)
    decides which declared types KVM_CREATE_VM offers. Two plugins declaring the
    same (arch, type number) is a PluginError.
    """


@hookspec
def kmock_platforms(kernel):
    """Return a list of :class:`kmock.platforms.Platform`: confidential hardware this
    plugin models ("tdx", "snp", "cca", ...), each for one architecture."""


@hookspec
def kmock_profiles():
    """Return a list of :class:`kmock.profiles.Profile` this plugin names, e.g.
    ``linux-6.18-tdx`` or an arm64 profile (``arch="arm64"``: KVM_CREATE_VM's argument
    then carries the IPA size in bits 7:0). Called when a profile name is looked up."""


@hookspec
def kmock_capabilities(kernel):
    """Return ``{capability: value}`` added to the system-level KVM_CHECK_EXTENSION
    values (/dev/kvm and every VM, before each VM type's ``capabilities()``): what the
    platform adds whatever the VM type, e.g. KVM_CAP_ARM_RMI, whose number is a setting.
    A value of 0 removes the capability. Called once when the Kernel is created."""


@hookspec
def kmock_ioctls(kernel, file_type):
    """Return ``{request_number: handler}`` added to ``file_type`` for every VM type.

    ``file_type`` is ``"kvm"`` (/dev/kvm), ``"vm"``, ``"vcpu"``, ``"gmem"``,
    ``"iommufd"``, ``"vfio"``, or a type a plugin's device declares.
    ``handler(file, arg)`` receives the open file object and the raw ioctl argument
    (use ``kmock.kernel_util.copy_from_user``/``copy_to_user`` for structs) and
    returns the ioctl's int result or raises OSError. Per-VM-type ioctls belong in
    ``VmType.ioctls`` instead (they override these for that type's VMs). Keys must
    be ints. Called once per file type when the Kernel is created.
    """


@hookspec
def kmock_dev_attr_groups(kernel):
    """Return ``{group: get(kernel, attr)}``: attribute groups of /dev/kvm's
    KVM_GET_DEVICE_ATTR / KVM_HAS_DEVICE_ATTR (x86 profiles) that the platform answers.

    x86.c __kvm_x86_dev_get_attr keeps group 0 (KVM_X86_XCOMP_GUEST_SUPP) for itself and
    hands every other group to the vendor module's dev_get_attr (SVM: sev_dev_get_attr for
    KVM_X86_GRP_SEV); a group nobody answers is ENXIO. ``get`` returns the attribute's u64
    value or raises OSError (ENXIO for an attribute the group lacks); KVM_HAS_DEVICE_ATTR
    calls it too and discards the value. Group 0 or a group two plugins declare is a
    PluginError. Called once when the Kernel is created; return nothing when your
    platform is not active.
    """


@hookspec
def kmock_devices(kernel):
    """Return ``{path: opener}``: device nodes this plugin adds (e.g. "/dev/sev").

    ``opener(kernel, flags)`` returns a kmock.file.File (or raises OSError); the
    Kernel installs it as a new fd. Called once when the Kernel is created; the
    platform decides (the plugin returns nothing when its platform is not active).
    """


# --- state --------------------------------------------------------------------------------


@hookspec
def kmock_snapshot(kernel, snapshot):
    """Add architecture state to ``snapshot`` (a ``kmock.snapshot.ArchSection``, a dict)
    under the plugin's own key.

    ``snapshot.add_table(key, name, runs, space="pfn"|"gpa"|"gfn"|"gmem_page", vm=...)``
    adds a table (runs ``[[start, end, state], ...]``) that ``kmock dump`` lists and
    draws; ``snapshot.vm_id(vm)`` names a VM as the snapshot does. The section becomes
    ``kmock.snapshot.capture(k)["arch"]``, and its keys join ``Kernel.snapshot()``'s
    top level. docs/snapshot-format.md describes the shape. Pass runs, never pages.
    """


# --- the syscall wrapper (tracing and fault injection) ------------------------------------


@hookspec
def kmock_syscall(kernel, name, args):
    """Wraps every syscall of the Kernel's API; implement it with ``wrapper=True``.

    ``name`` is the method name (``"ioctl"``, ``"fallocate"``, ...), ``args`` its
    positional arguments. A wrapper may raise OSError before ``yield`` to inject a
    failure, or inspect/replace the result after it. The Kernel only takes this
    path when at least one plugin implements the hook, so tracing costs nothing
    when unused.
    """
