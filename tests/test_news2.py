"""NEWS2 (alerts/news2.py, alerts/news2_cli.py): every band edge of the RCP chart on both sides,
chart rounding between printed bounds, aggregate bands, partial scores and the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
import typer
from typer.testing import CliRunner

from alerts.news2 import (
    AGGREGATES,
    CHART,
    PARAMETERS,
    NumericRow,
    Observation,
    UnscorableError,
    aggregate,
    parameter_score,
    round_half_up,
    score,
)
from alerts.news2_cli import news2

NOW = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

# A full set scoring 0 everywhere, so one parameter at a time can be moved to an edge.
NORMAL: dict[str, float] = {
    "resp_rate": 16,
    "spo2": 98,
    "systolic_bp": 120,
    "heart_rate": 70,
    "body_temp": 37.0,
}


def one(key: str, value: float, **kwargs: object) -> int:
    """The score of a single parameter, given on its own."""
    result = score(**{key: value}, **kwargs)  # type: ignore[arg-type]
    return result.parameters[key].score


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (70, 3)],
)
def test_resp_rate_edges(value: float, expected: int) -> None:
    assert one("resp_rate", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(50, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)],
)
@pytest.mark.parametrize("on_oxygen", [None, False, True])
def test_spo2_scale_1_edges(value: float, expected: int, on_oxygen: bool | None) -> None:
    # On scale 1 oxygen is scored on its own row, never through the saturation.
    assert one("spo2", value, spo2_scale=1, on_oxygen=on_oxygen) == expected


SCALE_2_LOW = [(50, 3), (83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0)]


@pytest.mark.parametrize(("value", "expected"), [*SCALE_2_LOW, (93, 0), (96, 0), (97, 0), (100, 0)])
def test_spo2_scale_2_on_air_edges(value: float, expected: int) -> None:
    assert one("spo2", value, spo2_scale=2, on_oxygen=False) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [*SCALE_2_LOW, (93, 1), (94, 1), (95, 2), (96, 2), (97, 3), (100, 3)],
)
def test_spo2_scale_2_on_oxygen_edges(value: float, expected: int) -> None:
    assert one("spo2", value, spo2_scale=2, on_oxygen=True) == expected


@pytest.mark.parametrize(("value", "expected"), SCALE_2_LOW)
def test_spo2_scale_2_below_93_needs_no_oxygen_status(value: float, expected: int) -> None:
    assert one("spo2", value, spo2_scale=2) == expected


def test_spo2_scale_2_from_93_needs_oxygen_status() -> None:
    with pytest.raises(ValueError, match="on oxygen"):
        score(spo2=93, spo2_scale=2)


def test_scale_2_unknown_oxygen_can_be_reported_instead_of_raised() -> None:
    # For monitoring, where nobody can be asked: the saturation is left out and says why.
    result = score(spo2=95, heart_rate=70, spo2_scale=2, unscorable="report")
    assert "spo2" not in result.parameters and "spo2" in result.missing
    assert result.unscored["spo2"]["value"] == 95 and "oxygen" in result.unscored["spo2"]["reason"]
    doc = result.as_json()
    assert doc["unscored"] == result.unscored and "spo2 95 measured but not scored" in doc["note"]
    json.dumps(doc)
    # Below 93 % scale 2 needs no oxygen status, and an implausible value is still refused.
    assert score(spo2=90, spo2_scale=2, unscorable="report").unscored == {}
    with pytest.raises(ValueError, match="plausible range"):
        score(spo2=30, spo2_scale=2, unscorable="report")
    assert "unscored" not in score(spo2=95, spo2_scale=2, on_oxygen=False).as_json()


def test_parameter_score_is_the_charts_cell() -> None:
    assert parameter_score("heart_rate", 135) == 3
    assert parameter_score("spo2", 95, spo2_scale=2, on_oxygen=True) == 2
    with pytest.raises(UnscorableError):
        parameter_score("spo2", 95, spo2_scale=2)


def test_scale_2_bands_are_labelled_by_air_or_oxygen() -> None:
    assert score(spo2=95, spo2_scale=2, on_oxygen=False).parameters["spo2"].band == "≥93 on air"
    assert score(spo2=95, spo2_scale=2, on_oxygen=True).parameters["spo2"].band == "95–96 on O2"


@pytest.mark.parametrize(("on_oxygen", "expected"), [(False, 0), (True, 2)])
def test_air_or_oxygen(on_oxygen: bool, expected: int) -> None:
    result = score(on_oxygen=on_oxygen)
    assert result.parameters["air_or_oxygen"].score == expected
    assert result.parameters["air_or_oxygen"].value == ("oxygen" if on_oxygen else "air")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(50, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)],
)
def test_systolic_bp_edges(value: float, expected: int) -> None:
    assert one("systolic_bp", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (20, 3),
        (40, 3),
        (41, 1),
        (50, 1),
        (51, 0),
        (90, 0),
        (91, 1),
        (110, 1),
        (111, 2),
        (130, 2),
        (131, 3),
        (250, 3),
    ],
)
def test_pulse_edges(value: float, expected: int) -> None:
    assert one("heart_rate", value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30.0, 3),
        (35.0, 3),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (43.0, 2),
    ],
)
def test_temperature_edges(value: float, expected: int) -> None:
    assert one("body_temp", value) == expected


@pytest.mark.parametrize(
    ("code", "expected"),
    [("A", 0), ("C", 3), ("V", 3), ("P", 3), ("U", 3), ("a", 0), ("u", 3), (" v ", 3)],
)
def test_consciousness(code: str, expected: int) -> None:
    result = score(consciousness=code)
    assert result.parameters["consciousness"].score == expected
    assert result.parameters["consciousness"].value == code.strip().upper()


@pytest.mark.parametrize(
    ("key", "value", "rounded", "expected"),
    [
        # Between printed bounds: half-up to the chart's precision, never into a gap.
        (
            "body_temp",
            36.05,
            36.1,
            0,
        ),  # banker's rounding or the float 36.0499… would give 36.0 → 1
        ("body_temp", 35.04, 35.0, 3),
        ("body_temp", 35.05, 35.1, 1),
        ("body_temp", 38.04, 38.0, 0),
        ("body_temp", 38.05, 38.1, 1),
        ("body_temp", 39.05, 39.1, 2),
        ("systolic_bp", 90.5, 91, 2),  # round(90.5) == 90 would score 3
        ("systolic_bp", 90.49, 90, 3),
        ("systolic_bp", 110.5, 111, 0),
        ("systolic_bp", 219.5, 220, 3),
        ("resp_rate", 20.5, 21, 2),  # round(20.5) == 20 would score 0
        ("resp_rate", 20.4, 20, 0),
        ("resp_rate", 8.5, 9, 1),
        ("resp_rate", 11.5, 12, 0),
        ("heart_rate", 40.5, 41, 1),
        ("heart_rate", 90.5, 91, 1),
        ("heart_rate", 130.5, 131, 3),
        ("spo2", 95.5, 96, 0),
        ("spo2", 91.5, 92, 2),
        ("spo2", 91.49, 91, 3),
    ],
)
def test_rounding_between_printed_bounds(
    key: str, value: float, rounded: float, expected: int
) -> None:
    used = score(**{key: value}).parameters[key]  # type: ignore[arg-type]
    assert (used.value, used.rounded, used.score) == (value, rounded, expected)


def test_round_half_up_is_not_bankers_rounding() -> None:
    assert round(90.5) == 90 and round_half_up(90.5, 0) == Decimal(91)
    assert round_half_up(36.05, 1) == Decimal("36.1")
    assert round_half_up(36.04, 1) == Decimal("36.0")


@pytest.mark.parametrize(
    "row", [r for r in CHART if isinstance(r, NumericRow)], ids=lambda row: row.label
)
def test_chart_bands_are_contiguous(row: NumericRow) -> None:
    # Within each air/oxygen variant, each band starts one chart step above the previous one ends.
    step = Decimal(1).scaleb(-row.decimals)
    for variant in (False, True):
        bands = [b for b in row.bands if b.on_oxygen in (None, variant)]
        assert bands[0].low is None and bands[-1].high is None
        for before, after in pairwise(bands):
            assert before.high is not None and after.low == before.high + step


def test_chart_has_every_parameter() -> None:
    assert {row.key for row in CHART} == set(PARAMETERS)
    assert {r.spo2_scale for r in CHART if isinstance(r, NumericRow) and r.key == "spo2"} == {1, 2}


def full(**changes: object) -> dict[str, object]:
    """Every parameter given: NORMAL vitals, alert, on air, then `changes`."""
    return {**NORMAL, "consciousness": "A", "on_oxygen": False, **changes}


@pytest.mark.parametrize(
    ("changes", "total", "band", "response", "single_3"),
    [
        ({}, 0, "low", "routine", False),
        ({"resp_rate": 21, "heart_rate": 111}, 4, "low", "ward-based response", False),
        ({"heart_rate": 91}, 1, "low", "ward-based response", False),
        ({"consciousness": "C"}, 3, "low-medium", "urgent ward-based response", True),
        (
            {"systolic_bp": 90, "heart_rate": 91},
            4,
            "low-medium",
            "urgent ward-based response",
            True,
        ),
        (
            {"resp_rate": 21, "on_oxygen": True, "heart_rate": 91},
            5,
            "medium",
            "urgent response",
            False,
        ),
        (
            {"resp_rate": 21, "on_oxygen": True, "spo2": 94, "heart_rate": 91},
            6,
            "medium",
            "urgent response",
            False,
        ),
        ({"resp_rate": 25, "heart_rate": 111}, 5, "medium", "urgent response", True),
        (
            {"resp_rate": 21, "on_oxygen": True, "heart_rate": 111, "body_temp": 38.5},
            7,
            "high",
            "emergency response",
            False,
        ),
        (
            {
                "resp_rate": 25,
                "spo2": 91,
                "on_oxygen": True,
                "systolic_bp": 90,
                "heart_rate": 131,
                "consciousness": "U",
                "body_temp": 39.1,
            },
            19,
            "high",
            "emergency response",
            True,
        ),
    ],
)
def test_aggregate_bands(
    changes: dict[str, object], total: int, band: str, response: str, single_3: bool
) -> None:
    result = score(**full(**changes))  # type: ignore[arg-type]
    assert result.complete and result.missing == []
    assert (result.score, result.band, result.clinical_response) == (total, band, response)
    assert result.any_single_3 is single_3


def test_aggregate_table_covers_every_total() -> None:
    assert [aggregate(t, False).band for t in range(8)] == ["low"] * 5 + ["medium"] * 2 + ["high"]
    assert [aggregate(t, True).band for t in (3, 4, 5, 7)] == [
        "low-medium",
        "low-medium",
        "medium",
        "high",
    ]
    assert AGGREGATES[0].single_3  # first match wins: the red-score rule must come first


def test_partial_scores_say_what_is_missing() -> None:
    result = score(heart_rate=72, spo2=93)
    assert not result.complete
    assert result.missing == [
        "resp_rate",
        "air_or_oxygen",
        "systolic_bp",
        "consciousness",
        "body_temp",
    ]
    assert list(result.parameters) == ["spo2", "heart_rate"]
    assert result.score == 2 and result.band == "low"
    doc = result.as_json()
    assert doc["complete"] is False and "not a full NEWS2" in doc["note"]
    assert "resp_rate" in doc["note"]


def test_nothing_given_is_an_empty_partial_score() -> None:
    result = score()
    assert result.score == 0 and result.missing == list(PARAMETERS) and not result.complete


def test_complete_result_has_no_partial_note() -> None:
    doc = score(**full()).as_json()  # type: ignore[arg-type]
    assert doc["complete"] is True and "note" not in doc
    assert set(doc["parameters"]) == set(PARAMETERS)
    json.dumps(doc)  # plain JSON types only


def test_ages_reported_when_observations_carry_times() -> None:
    result = score(
        heart_rate=Observation(72, NOW - timedelta(minutes=5)),
        spo2=Observation(97, NOW - timedelta(seconds=30)),
        body_temp=36.8,  # a plain number: no time, no age
        now=NOW,
    )
    assert result.parameters["heart_rate"].age_s == 300
    assert result.parameters["spo2"].age_s == 30
    assert result.parameters["body_temp"].age_s is None
    assert result.as_json()["parameters"]["heart_rate"]["age_s"] == 300


def test_observations_mapping_by_metric_name() -> None:
    result = score(
        observations={
            "resp_rate": Observation(22, NOW - timedelta(hours=2)),
            "systolic_bp": Observation(105),
        },
        now=NOW,
    )
    assert (
        result.parameters["resp_rate"].score == 2 and result.parameters["resp_rate"].age_s == 7200
    )
    assert result.parameters["systolic_bp"].score == 1
    assert result.score == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heart_rate": -5}, "plausible range"),
        ({"resp_rate": 0}, "plausible range"),
        ({"spo2": 101}, "plausible range"),
        ({"body_temp": 370}, "plausible range"),
        ({"systolic_bp": float("nan")}, "plausible range"),
        ({"heart_rate": float("inf")}, "plausible range"),
        ({"heart_rate": True}, "not a number"),
        ({"spo2_scale": 3}, "spo2_scale must be 1 or 2"),
        ({"spo2_scale": 0}, "spo2_scale must be 1 or 2"),
        ({"consciousness": "X"}, "consciousness must be one of A, C, V, P, U"),
        ({"consciousness": ""}, "consciousness must be one of"),
        ({"consciousness": "alert"}, "consciousness must be one of"),
        ({"heart_rate": Observation(70, NOW)}, "give now"),
        ({"heart_rate": Observation(70, datetime(2025, 3, 1, 8, 0)), "now": NOW}, "timezone-aware"),
        ({"heart_rate": Observation(70, NOW + timedelta(seconds=1)), "now": NOW}, "after now"),
        ({"observations": {"weight": Observation(60)}}, "not one of"),
        ({"heart_rate": 70, "observations": {"heart_rate": Observation(71)}}, "both"),
    ],
)
def test_invalid_input(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score(**kwargs)  # type: ignore[arg-type]


def test_result_is_frozen() -> None:
    result = score(heart_rate=70)
    with pytest.raises(AttributeError):
        result.score = 9  # type: ignore[misc]


# --- the command line -------------------------------------------------------------------------

app = typer.Typer()
app.command()(news2)
runner = CliRunner()

FULL_ARGS = [
    "--resp-rate", "22", "--spo2", "95", "--systolic-bp", "90.5", "--heart-rate", "60",
    "--body-temp", "36.05", "--consciousness", "a",
]  # fmt: skip


def test_cli_json_full() -> None:
    result = runner.invoke(app, [*FULL_ARGS, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    # resp 22 → 2, SpO2 95 → 1, air → 0, systolic 90.5 → 91 → 2, pulse 0, A 0, 36.05 → 36.1 → 0
    assert doc["score"] == 5 and doc["band"] == "medium" and doc["complete"] is True
    assert doc["missing"] == []
    assert doc["parameters"]["systolic_bp"]["rounded"] == 91
    assert doc["parameters"]["body_temp"]["rounded"] == 36.1
    assert doc["parameters"]["air_or_oxygen"] == {
        "value": "air", "rounded": "air", "score": 0, "band": "air", "age_s": None,
    }  # fmt: skip


def test_cli_on_oxygen_and_scale_2() -> None:
    result = runner.invoke(app, ["--spo2", "97", "--spo2-scale", "2", "--on-oxygen", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["parameters"]["spo2"]["score"] == 3
    assert doc["parameters"]["air_or_oxygen"]["score"] == 2
    assert doc["score"] == 5 and doc["spo2_scale"] == 2


def test_cli_missing_parameters_json() -> None:
    result = runner.invoke(app, ["--heart-rate", "135", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["complete"] is False
    # Without --on-oxygen the resident is stated to be on air, so that one is never missing.
    assert doc["missing"] == ["resp_rate", "spo2", "systolic_bp", "consciousness", "body_temp"]
    assert doc["score"] == 3 and doc["band"] == "low-medium"
    assert "not a full NEWS2" in doc["note"]


def test_cli_missing_parameters_table() -> None:
    result = runner.invoke(app, ["--heart-rate", "72", "--spo2", "96"])
    assert result.exit_code == 0, result.output
    assert "missing" in result.stdout
    assert "not a full NEWS2" in result.stdout
    assert "Score 0" in result.stdout


def test_cli_full_table_is_not_labelled_partial() -> None:
    result = runner.invoke(app, FULL_ARGS)
    assert result.exit_code == 0, result.output
    assert "Score 5: medium risk, urgent response." in result.stdout
    assert "Partial" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--consciousness", "X"], "consciousness must be one of"),
        (["--spo2-scale", "3"], "spo2_scale must be 1 or 2"),
        (["--heart-rate", "-5"], "plausible range"),
    ],
)
def test_cli_invalid_input_fails_cleanly(args: list[str], message: str) -> None:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 1
    assert message in " ".join(result.stderr.split())  # rich may wrap the line
    assert result.stdout == ""
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_help_gives_units() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("breaths/min", "%", "mmHg", "beats/min", "°C", "ACVPU", "--on-oxygen"):
        assert text in result.stdout
