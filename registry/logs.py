"""Logging set-up, done once in every process (workers are spawned fresh)."""

from __future__ import annotations

import logging

from config import Settings


def configure_logging(settings: Settings) -> None:
    """Log lines with time and level at ``REGISTRY_LOG_LEVEL``."""
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
