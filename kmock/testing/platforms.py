"""A Kernel for a profile and a platform, with a clear error when the platform is missing.

Platforms are provided by architecture plugins (``kmock_tdx``, ``kmock_snp``,
``kmock_cca`` under the ``kmock.plugins`` entry-point group); ``platform=`` is passed
to ``kmock.Kernel`` only when one is asked for, so a kmock without platforms works.
"""

PLATFORMS = ("none", "tdx", "snp", "cca")


class PlatformError(ValueError):
    """The platform is unknown, or its architecture plugin is not installed."""


def kernel_for(profile, platform=None, **settings):
    """``kmock.Kernel(profile, platform=platform, **settings)``; PlatformError otherwise."""
    import kmock

    if platform is None:
        return kmock.Kernel(profile, **settings)
    if platform not in PLATFORMS:
        raise PlatformError(f"unknown kmock platform {platform!r}; "
                            f"known: {', '.join(PLATFORMS)}")
    try:
        return kmock.Kernel(profile, platform=platform, **settings)
    except TypeError:
        if platform == "none":  # a kmock without platforms: "none" is what it emulates
            return kmock.Kernel(profile, **settings)
        error = "this kmock has no platforms yet"
    except (ValueError, LookupError) as e:
        error = str(e)
    raise PlatformError(
        f"kmock platform {platform!r} is not available ({error}); it needs the "
        f"architecture plugin kmock_{platform} registered under 'kmock.plugins'")
