"""pytester for the plugin tests; the plugin is loaded with -p unless installed."""

import importlib.metadata

pytest_plugins = ["pytester"]


def _installed():
    return any(ep.value == "kmock.testing.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


#: the arguments an inner pytest run needs to have the kmock plugin
PLUGIN_ARGS = () if _installed() else ("-p", "kmock.testing.pytest_plugin")
