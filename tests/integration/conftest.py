"""Session fixtures for the real-model tests."""

from __future__ import annotations

import pytest
from real_models import DRAFT, TARGET, load_or_skip


@pytest.fixture(scope="session")
def target_lm():
    return load_or_skip(TARGET)


@pytest.fixture(scope="session")
def draft_lm():
    return load_or_skip(DRAFT)
