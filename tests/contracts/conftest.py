"""The recording of every AWS call the functions and the worker make, once per test session."""

import pytest

from tests.contracts.recording import Recording, record


@pytest.fixture(scope="session")
def recording() -> Recording:
    return record()
