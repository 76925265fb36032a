import pytest

from kmock.preload.library import LibraryMissing, library_path


@pytest.fixture(scope="module")
def lib():
    """The preload library built by ``pip install -e .`` (skips the test without it)."""
    try:
        return library_path()
    except LibraryMissing as e:
        pytest.skip(str(e))
