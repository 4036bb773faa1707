"""Request and response models about residents: their record as administrators keep it (with
emergency contacts), and what their carers read (summary, detail, readings, latest values)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from api.deps import MAX_ID, NO_NUL

Phone = Annotated[str, Field(min_length=1, max_length=40, pattern=NO_NUL)]

# --- the record administrators keep ---------------------------------------------------------


class Contact(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    phone: Phone
    relation: str | None = Field(default=None, max_length=40, pattern=NO_NUL)


class ListedContact(Contact):
    priority: int


class NewResident(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    archive_id: str | None = Field(
        default=None, pattern=r"^[0-9]{17}$", description="健康档案编号, 17 digits"
    )
    birth_date: date | None = None
    gender: Literal["female", "male", "other", "unknown"] | None = None
    address: str | None = Field(default=None, max_length=300, pattern=NO_NUL)
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    spo2_scale: Literal[1, 2] = 1
    emergency_contacts: list[Contact] = Field(default_factory=list, max_length=10)


class ResidentChange(BaseModel):
    """Only the fields sent are changed; `emergency_contacts` replaces the list (in priority order).

    Name, SpO2 scale and contacts can be changed but not cleared (null is refused)."""

    # SkipJsonSchema: the schema says what is accepted (no null); the default means "not sent".
    name: (
        Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)] | SkipJsonSchema[None]
    ) = None
    archive_id: str | None = Field(default=None, pattern=r"^[0-9]{17}$")
    birth_date: date | None = None
    gender: Literal["female", "male", "other", "unknown"] | None = None
    address: str | None = Field(default=None, max_length=300, pattern=NO_NUL)
    spo2_scale: Literal[1, 2] | SkipJsonSchema[None] = Field(
        default=None, description="NEWS2 SpO2 scale 2 only for hypercapnic respiratory failure"
    )
    institution_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    emergency_contacts: Annotated[list[Contact], Field(max_length=10)] | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _not_cleared(self) -> Self:
        for name in ("name", "spo2_scale", "emergency_contacts"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ResidentRecord(BaseModel):
    id: int
    name: str
    archive_id: str | None
    birth_date: date | None
    gender: str | None
    address: str | None
    spo2_scale: int
    institution_id: int | None
    emergency_contacts: list[ListedContact]


# --- what carers read -----------------------------------------------------------------------


class ResidentSummary(BaseModel):
    id: int
    name: str
    archive_id: str | None
    birth_date: date | None
    gender: str | None
    institution_id: int | None


class Device(BaseModel):
    device_id: str
    kind: str
    online: bool
    battery: int | None
    last_seen_at: datetime | None


class ResidentDetail(ResidentSummary):
    address: str | None
    spo2_scale: int
    contracted_doctor: dict[str, Any] | None
    devices: list[Device]


class Reading(BaseModel):
    at: datetime
    metric: str
    value: float
    device_id: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    samples: int | None = None


class ReadingPage(BaseModel):
    resident_id: int
    bucket: str
    readings: list[Reading]
    next: str | None = Field(
        description="pass as ?cursor= (with the same query) for the next page; null on the last"
    )


class Latest(BaseModel):
    metric: str
    value: float
    unit: str
    measured_at: datetime
    device_id: str
