"""Fixtures of the CCA tests: a kernel with the arm64 and CCA plugins passed explicitly
(so the tests pass before and after the package is reinstalled)."""

import pytest

import kmock
import kmock_arm64
import kmock_cca


def cca_kernel(**settings):
    return kmock.Kernel("linux-arm64-cca", plugins=[kmock_arm64, kmock_cca], **settings)


@pytest.fixture
def k():
    kernel = cca_kernel()
    yield kernel
    kernel.close_all()
