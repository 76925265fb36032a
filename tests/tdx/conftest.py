"""Fixtures of the TDX tests: a Kernel with the kmock_tdx plugin passed explicitly (the
tests pass whether or not the package's entry point is installed)."""

import pytest

import kmock
import kmock_tdx


@pytest.fixture
def tdx_kernel():
    made = []

    def make(profile="linux-6.18-tdx", **settings):
        k = kmock.Kernel(profile, plugins=[kmock_tdx], **settings)
        made.append(k)
        return k

    yield make
    for k in made:
        k.close_all()
