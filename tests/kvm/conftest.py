import pytest

import kmock


@pytest.fixture
def k():
    """A fresh mock kernel of profile linux-6.18 with the installed plugins."""
    with kmock.Kernel(profile="linux-6.18") as kernel:
        yield kernel
