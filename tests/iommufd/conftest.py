import pytest

import kmock

from ._util import AP_START, Iommufd


@pytest.fixture
def k():
    with kmock.Kernel() as kernel:
        yield kernel


@pytest.fixture
def ictx(k):
    return Iommufd(k)


@pytest.fixture(params=["no_domain", "mock_domain"])
def ioas(request, ictx):
    """The selftest's iommufd_ioas fixture: an IOAS, with or without one mock domain.

    Returns (ictx, ioas_id, stdev_id, hwpt_id, base_iova)."""
    ioas_id = ictx.ioas_alloc()
    if request.param == "mock_domain":
        stdev, hwpt, _ = ictx.mock_domain(ioas_id)
        return ictx, ioas_id, stdev, hwpt, AP_START
    return ictx, ioas_id, 0, 0, 0
