"""Alert engine settings (ELDERCARE_ALERTS_* environment variables)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class AlertSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ELDERCARE_ALERTS_", extra="ignore", frozen=True)

    # How often rules, timers, escalations and reminders are evaluated.
    tick_s: float = 1.0
    # Reading rules need ≥ 60 s of data anyway: evaluating every few seconds costs nothing clinically
    # and keeps the database load flat with many residents. Device timers need even less.
    evaluate_every_s: float = 5.0
    device_check_every_s: float = 30.0
    # A fall is confirmed unless the device cancels it within this time (the wearer got up).
    fall_cancel_window_s: float = 30.0
    # E-mail channel; unset host: no e-mail (notifications for it stay pending and are reported).
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_sender: str = "eldercare@localhost"
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
