import sys
from pathlib import Path

# Shared fakes live in tests/fakes.py; make them importable as `fakes`.
sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _restore_structlog() -> Iterator[None]:
    """Undo any structlog set-up a test made (a CLI run configures logging).

    Without this a level filter or stream chosen by one test would leak into
    the next ones' captured logs.
    """
    yield
    structlog.reset_defaults()
