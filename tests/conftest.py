"""pytest fixtures shared by every test module."""

from __future__ import annotations

import pytest

from tests.helpers import Processes


@pytest.fixture
def processes():
    """Processes started by one test; all stopped when it ends."""
    with Processes("test") as group:
        yield group
