import pytest

import kmock


@pytest.fixture
def k8():
    """A mock kernel of profile gmem-attributes-v8 (kvm.gmem_in_place_conversion=1)."""
    with kmock.Kernel(profile="gmem-attributes-v8") as kernel:
        yield kernel


@pytest.fixture
def krfc():
    """A mock kernel of profile gmem-convert-rfc-v2."""
    with kmock.Kernel(profile="gmem-convert-rfc-v2") as kernel:
        yield kernel


@pytest.fixture
def k618():
    with kmock.Kernel(profile="linux-6.18") as kernel:
        yield kernel
