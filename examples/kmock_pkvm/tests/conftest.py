import pytest

import kmock
import kmock_pkvm

from pvm import Pvm


# [guide:fixture]
@pytest.fixture
def kernel():
    """A kernel with exactly this plugin, whether or not it is installed."""
    k = kmock.Kernel("linux-arm64-pkvm", only_plugins=[kmock_pkvm])
    yield k
    k.close_all()
# [/guide:fixture]


@pytest.fixture
def pvm(kernel):
    return Pvm(kernel)
