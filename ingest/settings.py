"""Ingest settings (ELDERCARE_INGEST_* environment variables)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.contract.envelope import Limits
from ingest.maintenance import Retention


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ELDERCARE_INGEST_", extra="ignore", frozen=True)

    # Stable per process: a restarted ingestor with the same instance resumes its broker session.
    # Unset: the process claims the lowest free numbered slot (ingest/slots.py).
    instance: str | None = None
    # How often a claimed slot checks that its database lock still holds (lost: exit status 70).
    slot_check_interval_s: float = Field(default=5, gt=0)
    # A check unanswered this long (silent network partition) counts as a lost lock, too.
    slot_check_deadline_s: float = Field(default=10, gt=0)
    # Every ingestor in the group shares the load ($share/<group>/...).
    share_group: str = "eldercare-ingest"
    # A batch is written when it holds this many messages or its oldest message is this old.
    max_batch: int = 2000
    flush_interval_s: float = 0.1
    # What each consumer (telemetry, events, status) holds in memory at most, received and not yet
    # committed: when full it stops reading from the broker, which holds the rest. The count is
    # also the session's MQTT Receive Maximum (unacknowledged QoS 1 messages the broker sends).
    # 10,000 × ~250 B of bookkeeping + 32 MiB of payloads: under 40 MiB per consumer.
    inbox_max_messages: int = Field(default=10_000, ge=1, le=65_535)
    inbox_max_bytes: int = Field(default=32 * 1024 * 1024, ge=64 * 1024)
    # Readings older than this (device backlog) are refused; newer than now + tolerance too.
    backfill_days: float = 7
    future_tolerance_s: float = 300
    # A process with --role telemetry lowers its own CPU priority by this much (nice), so that on a
    # saturated machine the events process and the alert engine run first: an SOS never waits for
    # the telemetry flood's share of the cores. 0 keeps the default priority.
    telemetry_nice: int = Field(default=5, ge=0, le=19)
    # Retention, applied by every ingest process in turn (ingest/maintenance.py); 0 turns it off.
    maintenance_interval_s: float = Field(default=300, ge=0)
    # Plain PostgreSQL only: how often the hourly and daily rollups are brought up to date
    # (store/rollups.py; TimescaleDB's own policies do it there); 0 turns it off.
    rollup_interval_s: float = Field(default=60, ge=0)
    # Message ids are what makes a re-sent message count once; past the backfill window a re-send
    # is refused as too old anyway, so they are kept that long plus this margin (at least the
    # future tolerance: a message may claim a `ts` up to that far after its arrival).
    message_id_margin_days: float = Field(default=1, ge=0.01)
    # Rejected messages are for diagnosis, not an archive: 30 days at most, and at most this many
    # (the newest) per device, so that one broken or hostile device cannot fill the disk.
    quarantine_retention_days: float = Field(default=30, gt=0)
    quarantine_per_device: int = Field(default=1000, ge=1)

    @property
    def limits(self) -> Limits:
        return Limits(
            future_tolerance=timedelta(seconds=self.future_tolerance_s),
            backfill_window=timedelta(days=self.backfill_days),
        )

    @property
    def retention(self) -> Retention:
        return Retention(
            message_ids=timedelta(days=self.backfill_days + self.message_id_margin_days)
            + timedelta(seconds=self.future_tolerance_s),
            quarantine=timedelta(days=self.quarantine_retention_days),
            quarantine_per_device=self.quarantine_per_device,
        )
