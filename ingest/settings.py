"""Ingest settings (ELDERCARE_INGEST_* environment variables)."""

from __future__ import annotations

from datetime import timedelta

from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.contract import Limits


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ELDERCARE_INGEST_", extra="ignore", frozen=True)

    # Stable per process: a restarted ingestor with the same instance resumes its broker session.
    # Unset: the process claims the lowest free numbered slot (ingest/slots.py).
    instance: str | None = None
    # Every ingestor in the group shares the load ($share/<group>/...).
    share_group: str = "eldercare-ingest"
    # A batch is written when it holds this many messages or its oldest message is this old.
    max_batch: int = 2000
    flush_interval_s: float = 0.1
    # Readings older than this (device backlog) are refused; newer than now + tolerance too.
    backfill_days: float = 7
    future_tolerance_s: float = 300

    @property
    def limits(self) -> Limits:
        return Limits(
            future_tolerance=timedelta(seconds=self.future_tolerance_s),
            backfill_window=timedelta(days=self.backfill_days),
        )
