"""Fixtures for the memory-core tests: every test runs on the compiled core and its twin."""

import pytest

from _mm_impls import IMPLS, load_impl


@pytest.fixture(params=IMPLS)
def impl(request):
    """The implementation module under test (compiled kmock.mm._core or kmock.mm._pure)."""
    return load_impl(request.param)
