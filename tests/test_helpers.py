"""The shared test helpers themselves: a subprocess's time comes from the test's own timeout."""

from __future__ import annotations

import pytest
from helpers import time_left


@pytest.mark.timeout(50)
def test_time_left_follows_the_tests_own_mark() -> None:
    left = time_left()
    assert left is not None and 40 < left < 50


def test_time_left_follows_the_ini_default_without_a_mark(pytestconfig: pytest.Config) -> None:
    default = float(pytestconfig.getini("timeout"))
    left = time_left()
    assert left is not None and default * 0.8 < left < default


@pytest.mark.timeout(0)
def test_no_timeout_means_no_limit() -> None:
    assert time_left() is None
