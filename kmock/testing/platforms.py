"""A Kernel for a profile and a platform, with a clear error when the platform is missing.

Platforms are declared by architecture plugins (``kmock_tdx``, ``kmock_snp``,
``kmock_cca`` under the ``kmock.plugins`` entry-point group, or a third party's);
``kmock.Kernel`` refuses a platform no installed plugin declares for the profile's
architecture, and this module turns that into a PlatformError for the pytest plugin.
"""

from ..errors import KmockUsageError


class PlatformError(ValueError):
    """The profile or platform is unknown, or its architecture plugin is not installed."""


def kernel_for(profile, platform=None, **settings):
    """``kmock.Kernel(profile, platform=platform, **settings)``; PlatformError otherwise."""
    import kmock

    if platform is not None:
        settings["platform"] = platform
    try:
        return kmock.Kernel(profile, **settings)
    except KmockUsageError as e:
        hint = ""
        if platform is not None and "platform" in str(e):
            hint = (f" (a platform comes from the architecture plugin that declares it, e.g. "
                    f"kmock_{platform}, registered under 'kmock.plugins'; arm64 platforms "
                    f"need an arm64 profile such as linux-arm64-cca)")
        raise PlatformError(f"{e}{hint}") from None
