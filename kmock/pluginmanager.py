"""The ``kmock`` plugin manager: discovery, registration and the contract's checks.

Plugin mistakes are caught when a Kernel is created, with a message naming the
plugin (kmock.errors.PluginError): an entry point that fails to load, a hook
implementation whose name no hookspec has (a misspelt hook), a ``kmock_*``
function without ``@hookimpl`` (pluggy would ignore it), a VM type number
declared twice, an ioctl table with non-int keys. (A veto that returns anything
but an errno is caught where it is called: kmock.notifier.check_veto.)
"""

from importlib.metadata import entry_points

import pluggy

from . import hookspecs
from .errors import PluginError

GROUP = "kmock.plugins"


def plugin_manager(core, plugins=(), only_plugins=None):
    """A ``kmock`` PluginManager with ``core``, then the installed plugins (the entry
    points of GROUP) and ``plugins``; or, with ``only_plugins``, exactly those."""
    pm = pluggy.PluginManager("kmock")
    pm.add_hookspecs(hookspecs)
    pm.register(core, name="kmock.core")
    if only_plugins is not None:
        listed = only_plugins
    else:
        listed = [*_installed(), *(plugins or ())]
    for p in listed:
        name = p[0] if isinstance(p, tuple) else None
        obj = p[1] if isinstance(p, tuple) else p
        _check_functions(obj, name)
        if pm.is_registered(obj):
            continue
        try:
            pm.register(obj, name=name)
        except ValueError as e:
            raise PluginError(f"plugin {name or obj!r} cannot be registered: {e}") from None
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise PluginError(f"plugin {plugin_name(pm, e.plugin)}: {e} (a misspelt hook name? "
                          f"the hooks are listed in kmock/hookspecs.py)") from None
    return pm


def _installed():
    """(entry point name, plugin object) for each installed plugin."""
    out = []
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()
        except Exception as e:
            raise PluginError(f"the kmock plugin entry point {ep.name!r} ({ep.value}) failed "
                              f"to load: {type(e).__name__}: {e}") from e
        out.append((ep.name, obj))
    return out


def _check_functions(obj, name):
    """A ``kmock_*`` attribute that is not marked @hookimpl would be ignored by pluggy."""
    for attr in dir(obj):
        if not attr.startswith("kmock_"):
            continue
        fn = getattr(obj, attr, None)
        if callable(fn) and not hasattr(fn, "kmock_impl"):
            raise PluginError(f"plugin {name or obj!r}: {attr} is not marked with "
                              f"@kmock.hookspecs.hookimpl, so it would never be called")


def plugin_name(pm, plugin):
    """The entry point's name, or the plugin's repr (pluggy names others by id())."""
    name = pm.get_name(plugin)
    if not name or name == str(id(plugin)):
        return repr(plugin)
    return name


def collect_vm_types(pm, kernel):
    """{type number: VmType}, refusing a number two plugins declare."""
    from .kvm.vmtype import VmType

    types = {}
    owners = {}
    for impl in pm.hook.kmock_vm_types.get_hookimpls():
        for t in impl.function(kernel=kernel) or ():
            who = plugin_name(pm, impl.plugin)
            if not isinstance(t, VmType):
                raise PluginError(f"plugin {who}: kmock_vm_types returned {t!r}, not a "
                                  f"kmock.kvm.vmtype.VmType instance")
            key = (t.arch, t.type)
            if key in types:
                raise PluginError(f"VM type {t.type} ({t.arch}) is declared twice: {t.name} by "
                                  f"{who}, {types[key].name} by {owners[key]}")
            types[key] = t
            owners[key] = who
    return types


def checked_table(who, table):
    """An ioctl table with int keys and callable handlers, or PluginError."""
    table = dict(table or {})
    for k, h in table.items():
        if type(k) is not int:
            raise PluginError(f"{who}: ioctl table key {k!r} is not an int request number")
        if not callable(h):
            raise PluginError(f"{who}: handler for ioctl {k:#x} is not callable")
    return table
