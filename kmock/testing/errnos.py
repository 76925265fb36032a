"""Small assertions for tests of code that calls the syscall API."""


def err(fn, *args, **kw):
    """The errno ``fn(*args)`` fails with; fails the test if it succeeds."""
    try:
        r = fn(*args, **kw)
    except OSError as e:
        return e.errno
    raise AssertionError(f"{getattr(fn, '__name__', fn)}{args} succeeded with {r!r}")


def errno_or_0(fn, *args, **kw):
    """0 if ``fn(*args)`` succeeds (any return value), else its errno."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno
    return 0
