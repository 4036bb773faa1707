"""Request and response models of the care circle's administration: institutions, doctors,
contracts, thresholds and escalation policies (the rules are in care/service.py)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from api.deps import MAX_ID, NO_NUL
from care.service import InstitutionKind, TierTarget

# --- institutions ---------------------------------------------------------------------------


class NewInstitution(BaseModel):
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    kind: InstitutionKind
    phone: str | None = Field(default=None, max_length=40, pattern=NO_NUL)


class Institution(BaseModel):
    id: int
    name: str
    kind: str
    phone: str | None


class CreatedInstitution(Institution):
    created_at: datetime
    duty_desk_id: int | None = None


# --- doctors --------------------------------------------------------------------------------


class NewDoctor(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    institution_id: int = Field(ge=1, le=MAX_ID)
    team: str | None = Field(default=None, max_length=100, pattern=NO_NUL)
    phone: str | None = Field(default=None, max_length=40, pattern=NO_NUL)
    email: str | None = Field(default=None, max_length=200, pattern=NO_NUL)


class Doctor(BaseModel):
    id: int
    name: str
    role: str
    institution_id: int | None
    team: str | None
    phone: str | None
    email: str | None
    active: bool = True


# --- contracts (家庭医生签约) ------------------------------------------------------------------


class NewContract(BaseModel):
    resident_id: int = Field(ge=1, le=MAX_ID)
    doctor_id: int = Field(ge=1, le=MAX_ID)


class Contract(BaseModel):
    id: int
    resident_id: int
    doctor_id: int
    valid_from: datetime
    valid_to: datetime | None


class ContractListed(Contract):
    resident_name: str
    doctor_name: str
    active: bool


class EndContract(BaseModel):
    valid_to: datetime | None = Field(default=None, description="default: now")


# --- thresholds -----------------------------------------------------------------------------


class Threshold(BaseModel):
    # Broad bounds for the schema; the metric's plausible range (ingest/metrics.py) is checked
    # after authorisation, as a limit no reading can cross would silence the rule (422).
    low: float | None = Field(default=None, ge=-1000, le=100_000)
    high: float | None = Field(default=None, ge=-1000, le=100_000)


class StoredThreshold(Threshold):
    resident_id: int
    metric: str
    set_by: str | None
    set_at: datetime


# --- escalation policies --------------------------------------------------------------------


class Tier(BaseModel):
    after_s: int = Field(ge=0, le=7 * 24 * 3600)
    notify: list[TierTarget] = Field(min_length=1)


class Policy(BaseModel):
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    reminder_every_s: int | None = Field(default=None, ge=30, le=24 * 3600)
    tiers: list[Tier] = Field(min_length=1, max_length=10)


class StoredPolicy(BaseModel):
    id: int
    institution_id: int | None
    severity: str
    reminder_every_s: int | None
    tiers: list[Tier]
