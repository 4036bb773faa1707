"""NEWS2 (National Early Warning Score 2): the chart as one table, and a pure scorer over it.

Source: Royal College of Physicians, National Early Warning Score (NEWS) 2 (2017), as transcribed in
shared CLINICAL.md (chart, SpO2 scale 2 rule, aggregate bands and clinical responses).

How a value finds its band:
- It is first rounded as the chart is read: temperature to 1 decimal, every other parameter to a
  whole number, half-up (36.05 °C → 36.1, 90.5 mmHg → 91). Python's round() rounds half to even
  (round(90.5) == 90) and a float such as 36.05 is stored as 36.0499…, so rounding goes through the
  value's shortest decimal text (repr) with Decimal ROUND_HALF_UP instead.
- The bands of a parameter are contiguous on the rounded value (inclusive bounds, the printed
  cut-offs), so every plausible reading belongs to exactly one band, never to a gap between two.

Wearables do not measure every parameter. `score` scores what it is given, lists what is missing
and, when the readings carry their measurement times, how old each one is; a result with
`complete` False is a partial score (a lower bound) and must never be shown as a full NEWS2.
A measured value the chart cannot score with what is known (SpO2 ≥ 93 % on scale 2 without knowing
air or oxygen) either raises or, with `unscorable="report"`, is left out and named in `unscored`
with the reason: a monitoring system must say what it could not judge, not drop it quietly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Literal

from ingest.metrics import METRICS

RiskBand = Literal["low", "low-medium", "medium", "high"]
Unscorable = Literal["raise", "report"]

# The seven NEWS2 parameters, in chart order; the measured ones carry eldercare metric names.
PARAMETERS: tuple[str, ...] = (
    "resp_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "heart_rate",
    "consciousness",
    "body_temp",
)
MEASURED: tuple[str, ...] = ("resp_rate", "spo2", "systolic_bp", "heart_rate", "body_temp")

D = Decimal


@dataclass(frozen=True)
class Band:
    """One cell of the chart: rounded values low..high (inclusive; None: open) score `score`."""

    low: Decimal | None
    high: Decimal | None
    score: int
    # SpO2 scale 2 only: the band applies only on oxygen (True) or on air (False); None: either.
    on_oxygen: bool | None = None

    def contains(self, rounded: Decimal) -> bool:
        return (self.low is None or self.low <= rounded) and (
            self.high is None or rounded <= self.high
        )

    @property
    def label(self) -> str:
        if self.low is None:
            text = f"≤{self.high}"
        elif self.high is None:
            text = f"≥{self.low}"
        else:
            text = f"{self.low}–{self.high}"
        if self.on_oxygen is None:
            return text
        return f"{text} on O2" if self.on_oxygen else f"{text} on air"


@dataclass(frozen=True)
class NumericRow:
    """A measured parameter's row: its bands in ascending order of value."""

    key: str  # eldercare metric name (ingest/metrics.py)
    label: str  # as printed on the chart
    unit: str
    decimals: int  # the chart's precision: values are rounded to this before banding
    bands: tuple[Band, ...]
    spo2_scale: int | None = None  # only the two SpO2 rows


@dataclass(frozen=True)
class Level:
    code: str
    meaning: str
    score: int


@dataclass(frozen=True)
class CategoryRow:
    """A parameter that is a choice, not a measurement (air/oxygen, ACVPU consciousness)."""

    key: str
    label: str
    levels: tuple[Level, ...]


ChartRow = NumericRow | CategoryRow

CHART: tuple[ChartRow, ...] = (
    NumericRow(
        "resp_rate",
        "Respiration rate",
        "/min",
        0,
        (
            Band(None, D(8), 3),
            Band(D(9), D(11), 1),
            Band(D(12), D(20), 0),
            Band(D(21), D(24), 2),
            Band(D(25), None, 3),
        ),
    ),
    NumericRow(
        "spo2",
        "SpO2 scale 1",
        "%",
        0,
        (
            Band(None, D(91), 3),
            Band(D(92), D(93), 2),
            Band(D(94), D(95), 1),
            Band(D(96), None, 0),
        ),
        spo2_scale=1,
    ),
    # Scale 2: only for hypercapnic respiratory failure with a prescribed 88–92% target (the
    # doctor's per-resident setting). At 93% and above the score depends on air vs oxygen: high
    # saturation on oxygen means over-oxygenation for these residents, on air it is harmless.
    NumericRow(
        "spo2",
        "SpO2 scale 2",
        "%",
        0,
        (
            Band(None, D(83), 3),
            Band(D(84), D(85), 2),
            Band(D(86), D(87), 1),
            Band(D(88), D(92), 0),
            Band(D(93), None, 0, on_oxygen=False),
            Band(D(93), D(94), 1, on_oxygen=True),
            Band(D(95), D(96), 2, on_oxygen=True),
            Band(D(97), None, 3, on_oxygen=True),
        ),
        spo2_scale=2,
    ),
    CategoryRow(
        "air_or_oxygen", "Air or oxygen", (Level("air", "air", 0), Level("oxygen", "oxygen", 2))
    ),
    NumericRow(
        "systolic_bp",
        "Systolic BP",
        "mmHg",
        0,
        (
            Band(None, D(90), 3),
            Band(D(91), D(100), 2),
            Band(D(101), D(110), 1),
            Band(D(111), D(219), 0),
            Band(D(220), None, 3),
        ),
    ),
    NumericRow(
        "heart_rate",
        "Pulse",
        "/min",
        0,
        (
            Band(None, D(40), 3),
            Band(D(41), D(50), 1),
            Band(D(51), D(90), 0),
            Band(D(91), D(110), 1),
            Band(D(111), D(130), 2),
            Band(D(131), None, 3),
        ),
    ),
    # C is *new* confusion (or delirium); a resident's known, long-standing confusion scores as A.
    CategoryRow(
        "consciousness",
        "Consciousness",
        (
            Level("A", "alert", 0),
            Level("C", "new confusion", 3),
            Level("V", "responds to voice", 3),
            Level("P", "responds to pain", 3),
            Level("U", "unresponsive", 3),
        ),
    ),
    NumericRow(
        "body_temp",
        "Temperature",
        "°C",
        1,
        (
            Band(None, D("35.0"), 3),
            Band(D("35.1"), D("36.0"), 1),
            Band(D("36.1"), D("38.0"), 0),
            Band(D("38.1"), D("39.0"), 1),
            Band(D("39.1"), None, 2),
        ),
    ),
)


@dataclass(frozen=True)
class Aggregate:
    """An aggregate band: totals low..high (inclusive; None: open) and the response they call for."""

    band: RiskBand
    low: int
    high: int | None
    clinical_response: str
    # Only when some single parameter scores 3 (the "red score"), which lifts a low total.
    single_3: bool = False


# First match wins, so the single-3 rule comes before the plain low band it overrides; at 5 and
# above the total's own band is at least as urgent, so the single-3 rule stops at 4.
AGGREGATES: tuple[Aggregate, ...] = (
    Aggregate("low-medium", 0, 4, "urgent ward-based response", single_3=True),
    Aggregate("low", 0, 0, "routine"),  # the chart's band is low; monitoring stays routine
    Aggregate("low", 1, 4, "ward-based response"),
    Aggregate("medium", 5, 6, "urgent response"),
    Aggregate("high", 7, None, "emergency response"),
)


@dataclass(frozen=True)
class Observation:
    """A measured value and, when known, when it was measured (timezone-aware)."""

    value: float
    measured_at: datetime | None = None


@dataclass(frozen=True)
class ParameterScore:
    value: float | str  # as given (numbers) or the chart code ("air", "oxygen", "A", "C", …)
    rounded: float | str  # what the chart was read with
    score: int
    band: str  # the chart cell, e.g. "12–20", "≥93 on air", "A"
    age_s: float | None = None  # seconds from measurement to `now`, when the time is known


@dataclass(frozen=True)
class News2Result:
    score: int
    band: RiskBand
    clinical_response: str
    parameters: dict[str, ParameterScore]  # the parameters used, in chart order
    missing: list[str]  # of PARAMETERS, the ones not given
    complete: bool  # all seven given; otherwise a partial score, never a full NEWS2
    any_single_3: bool
    spo2_scale: int
    # Measured but not scorable with what is known: parameter -> {"value": …, "reason": …}. Such a
    # parameter is also in `missing`: the score is partial, and may be higher than shown.
    unscored: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (plain str/int/float/bool/None/list/dict)."""
        out: dict[str, Any] = {
            "score": self.score,
            "band": self.band,
            "clinical_response": self.clinical_response,
            "complete": self.complete,
            "missing": list(self.missing),
            "any_single_3": self.any_single_3,
            "spo2_scale": self.spo2_scale,
            "parameters": {
                key: {
                    "value": p.value,
                    "rounded": p.rounded,
                    "score": p.score,
                    "band": p.band,
                    "age_s": p.age_s,
                }
                for key, p in self.parameters.items()
            },
        }
        if self.unscored:
            out["unscored"] = {key: dict(item) for key, item in self.unscored.items()}
        if not self.complete:
            out["note"] = partial_note(self)
        return out


def partial_note(result: News2Result) -> str:
    """The warning a partial score must carry wherever it is shown."""
    used = len(result.parameters)
    note = (
        f"partial score from {used} of {len(PARAMETERS)} parameters, missing "
        f"{', '.join(result.missing)}: not a full NEWS2 (the full score may be higher)"
    )
    for key, item in result.unscored.items():
        note += f"; {key} {item['value']:g} measured but not scored: {item['reason']}"
    return note


def round_half_up(value: float, decimals: int) -> Decimal:
    """Round as the chart is read; repr gives the decimal the value was written as (36.05, not
    36.0499…), so a reading exactly halfway goes up, as a person reading the chart would take it."""
    return Decimal(repr(float(value))).quantize(
        Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP
    )


def _row(key: str, spo2_scale: int = 1) -> ChartRow:
    for row in CHART:
        if row.key == key and (
            not isinstance(row, NumericRow) or row.spo2_scale in (None, spo2_scale)
        ):
            return row
    raise KeyError(key)


class UnscorableError(ValueError):
    """The value is valid, but the chart needs a fact that was not given to score it."""


def _band(row: NumericRow, rounded: Decimal, on_oxygen: bool | None) -> Band:
    cells = [b for b in row.bands if b.contains(rounded)]
    if on_oxygen is None and any(b.on_oxygen is not None for b in cells):
        raise UnscorableError(
            f"{row.label} {rounded}% is scored by whether the resident is on oxygen: give on_oxygen"
        )
    return next(b for b in cells if b.on_oxygen is None or b.on_oxygen == on_oxygen)


def _measured(
    key: str,
    given: float | Observation,
    *,
    spo2_scale: int,
    on_oxygen: bool | None,
    now: datetime | None,
) -> ParameterScore:
    obs = given if isinstance(given, Observation) else Observation(given)
    value = obs.value
    # bool is an int to Python, but True is never a reading.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key}: {value!r} is not a number")
    metric = METRICS[key]
    # The ingest plausibility range: outside it the value is sensor garbage or a typing error, and
    # scoring it would be worse than refusing.
    if not math.isfinite(value) or not metric.low <= value <= metric.high:
        raise ValueError(
            f"{key}: {value} {metric.unit} is outside the plausible range "
            f"{metric.low}–{metric.high} {metric.unit}"
        )
    row = _row(key, spo2_scale)
    assert isinstance(row, NumericRow)
    rounded = round_half_up(value, row.decimals)
    band = _band(row, rounded, on_oxygen)
    return ParameterScore(
        value=float(value),
        rounded=int(rounded) if row.decimals == 0 else float(rounded),
        score=band.score,
        band=band.label,
        age_s=_age(key, obs.measured_at, now),
    )


def _age(key: str, measured_at: datetime | None, now: datetime | None) -> float | None:
    if measured_at is None:
        return None
    # Pure: no clock is read here, the caller says what "now" is.
    if now is None:
        raise ValueError(f"{key} carries a measurement time: give now so its age can be reported")
    if measured_at.tzinfo is None or now.tzinfo is None:
        raise ValueError(f"{key}: measured_at and now must be timezone-aware")
    age = (now - measured_at).total_seconds()
    if age < 0:
        raise ValueError(
            f"{key}: measured at {measured_at.isoformat()}, after now ({now.isoformat()})"
        )
    return age


def parameter_score(
    key: str, value: float, *, spo2_scale: int = 1, on_oxygen: bool | None = None
) -> int:
    """The chart's score for one measured value (ValueError as `score`; UnscorableError when the
    value needs air/oxygen to be known)."""
    return _measured(key, value, spo2_scale=spo2_scale, on_oxygen=on_oxygen, now=None).score


def _category(key: str, code: str) -> ParameterScore:
    row = _row(key)
    assert isinstance(row, CategoryRow)
    for level in row.levels:
        if level.code == code:
            return ParameterScore(value=code, rounded=code, score=level.score, band=code)
    raise AssertionError(f"{key}: no level {code!r}")  # callers pass only the chart's codes


def aggregate(total: int, any_single_3: bool) -> Aggregate:
    """The aggregate band and clinical response for a total score."""
    for agg in AGGREGATES:
        if agg.single_3 and not any_single_3:
            continue
        if agg.low <= total and (agg.high is None or total <= agg.high):
            return agg
    raise ValueError(f"total {total} is not a NEWS2 score")


def score(
    *,
    resp_rate: float | Observation | None = None,
    spo2: float | Observation | None = None,
    systolic_bp: float | Observation | None = None,
    heart_rate: float | Observation | None = None,
    body_temp: float | Observation | None = None,
    consciousness: str | None = None,
    on_oxygen: bool | None = None,
    spo2_scale: int = 1,
    now: datetime | None = None,
    observations: Mapping[str, Observation] | None = None,
    unscorable: Unscorable = "raise",
) -> News2Result:
    """Score NEWS2 from whatever parameters are known; None means not available (missing).

    - resp_rate (/min), spo2 (%), systolic_bp (mmHg), heart_rate (pulse, /min), body_temp (°C):
      a plain number, or an Observation carrying its measurement time. They may instead come in
      `observations`, keyed by the same metric names (for callers holding readings by metric);
      giving one both ways is an error.
    - consciousness: ACVPU code, A/C/V/P/U, any case (C is *new* confusion).
    - on_oxygen: True on supplemental oxygen, False breathing air, None unknown (missing).
    - spo2_scale: 1, or 2 for a resident the doctor has put on scale 2. On scale 2 a saturation of
      93% or more cannot be scored without on_oxygen.
    - now: required when any Observation has a measured_at, to report each one's age (age_s).
    - unscorable: "raise" (UnscorableError, a ValueError) or "report": leave such a value out, name
      it in `missing` and in `unscored` with the reason (for monitoring, where nobody can be asked).

    Raises ValueError for an implausible or non-numeric value, an unknown consciousness code,
    a scale other than 1 or 2, or a measurement time without `now` (or after it).
    """
    if spo2_scale not in (1, 2) or isinstance(spo2_scale, bool):
        raise ValueError(f"spo2_scale must be 1 or 2, not {spo2_scale!r}")
    given: dict[str, float | Observation | None] = {
        "resp_rate": resp_rate,
        "spo2": spo2,
        "systolic_bp": systolic_bp,
        "heart_rate": heart_rate,
        "body_temp": body_temp,
    }
    for key, obs in (observations or {}).items():
        if key not in given:
            raise ValueError(f"observations: {key!r} is not one of {', '.join(MEASURED)}")
        if given[key] is not None:
            raise ValueError(f"{key} given both as an argument and in observations")
        given[key] = obs

    used: dict[str, ParameterScore] = {}
    unscored: dict[str, dict[str, Any]] = {}
    for key, value in given.items():
        if value is None:
            continue
        try:
            used[key] = _measured(key, value, spo2_scale=spo2_scale, on_oxygen=on_oxygen, now=now)
        except UnscorableError:
            if unscorable == "raise":
                raise
            measured = value.value if isinstance(value, Observation) else value
            unscored[key] = {
                "value": float(measured),
                "reason": f"on SpO2 scale 2 a saturation of {measured:g}% scores 0 on air but up "
                "to 3 on oxygen, and whether the resident is on oxygen is not known",
            }
    if on_oxygen is not None:
        used["air_or_oxygen"] = _category("air_or_oxygen", "oxygen" if on_oxygen else "air")
    if consciousness is not None:
        code = consciousness.strip().upper()
        if code not in {"A", "C", "V", "P", "U"}:
            raise ValueError(
                f"consciousness must be one of A, C, V, P, U (ACVPU), not {consciousness!r}"
            )
        used["consciousness"] = _category("consciousness", code)

    parameters = {key: used[key] for key in PARAMETERS if key in used}
    missing = [key for key in PARAMETERS if key not in used]
    total = sum(p.score for p in parameters.values())
    any_single_3 = any(p.score == 3 for p in parameters.values())
    agg = aggregate(total, any_single_3)
    return News2Result(
        score=total,
        band=agg.band,
        clinical_response=agg.clinical_response,
        parameters=parameters,
        missing=missing,
        complete=not missing,
        any_single_3=any_single_3,
        spo2_scale=spo2_scale,
        unscored=unscored,
    )
