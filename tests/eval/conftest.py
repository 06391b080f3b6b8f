"""The evaluation's small models and heads run fastest on one thread (the protocol's workers run
with one each), and their checks compare runs: they state their compute conditions."""
import pytest

from tests.conftest import compute_conditions


@pytest.fixture(autouse=True)
def one_thread():
    with compute_conditions(threads=1, deterministic=False):
        yield
