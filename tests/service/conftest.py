"""Fixtures of the service-layer tests, kept out of tests/conftest.py: the systemd guest loads that one
with a Python that has none of the daemon's dependencies (structlog among them)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs


@pytest.fixture
def logged() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every log event, with the name of the logger it went to (as the daemon's stdlib loggers have)."""
    saved = structlog.get_config()
    structlog.configure(logger_factory=structlog.stdlib.LoggerFactory(), wrapper_class=structlog.stdlib.BoundLogger,
                        cache_logger_on_first_use=False)
    try:
        with capture_logs(processors=[structlog.stdlib.add_logger_name]) as events:
            yield events
    finally:
        structlog.configure(**saved)
