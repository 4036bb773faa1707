"""`eldercare news2`: score NEWS2 by hand from vital signs typed in (alerts/news2.py does the work).

A clinician or operator types what was measured; parameters left out are reported as missing and the
result is labelled a partial score, never a full NEWS2 (Royal College of Physicians NEWS2, see
shared CLINICAL.md).

Air or oxygen is always stated on this command line: without --on-oxygen the resident is taken to
be breathing air (scores 0) and air_or_oxygen counts as given, because a person at the bedside
typing the other vitals knows whether oxygen is running, and on SpO2 scale 2 the saturation cannot
be scored without it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from alerts.news2 import CHART, PARAMETERS, News2Result, NumericRow, partial_note, score
from eldercare.output import emit_json, fail, table

_UNITS = {row.key: row.unit for row in CHART if isinstance(row, NumericRow)}
_LABELS = {row.key: row.label for row in CHART if not isinstance(row, NumericRow)} | {
    "resp_rate": "Respiration rate",
    "spo2": "SpO2",
    "systolic_bp": "Systolic BP",
    "heart_rate": "Pulse",
    "body_temp": "Temperature",
}


def news2(
    resp_rate: Annotated[
        float | None, typer.Option("--resp-rate", help="Respiration rate, breaths/min.")
    ] = None,
    spo2: Annotated[
        float | None, typer.Option("--spo2", help="Oxygen saturation by pulse oximetry, %.")
    ] = None,
    systolic_bp: Annotated[
        float | None, typer.Option("--systolic-bp", help="Systolic blood pressure, mmHg.")
    ] = None,
    heart_rate: Annotated[
        float | None, typer.Option("--heart-rate", help="Pulse (heart rate), beats/min.")
    ] = None,
    body_temp: Annotated[
        float | None, typer.Option("--body-temp", help="Body temperature, °C.")
    ] = None,
    consciousness: Annotated[
        str | None,
        typer.Option(
            "--consciousness",
            help="ACVPU: A alert, C new confusion, V responds to voice, P responds to pain, "
            "U unresponsive.",
        ),
    ] = None,
    on_oxygen: Annotated[
        bool,
        typer.Option(
            "--on-oxygen",
            help="The resident is on supplemental oxygen (scores 2). Without it: breathing air.",
        ),
    ] = False,
    spo2_scale: Annotated[
        int,
        typer.Option(
            "--spo2-scale",
            help="SpO2 scale, 1 or 2. Scale 2 only when the doctor has set it for hypercapnic "
            "respiratory failure with a prescribed 88–92% target.",
        ),
    ] = 1,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """NEWS2 early warning score from vital signs; left-out parameters make a partial score."""
    try:
        result = score(
            resp_rate=resp_rate,
            spo2=spo2,
            systolic_bp=systolic_bp,
            heart_rate=heart_rate,
            body_temp=body_temp,
            consciousness=consciousness,
            on_oxygen=on_oxygen,
            spo2_scale=spo2_scale,
        )
    except ValueError as exc:
        fail(str(exc))
    if json:
        emit_json(result.as_json())
    else:
        _print(result)


def _print(result: News2Result) -> None:
    rows: list[tuple[object, ...]] = []
    for key in PARAMETERS:  # chart order, missing ones in their place
        p = result.parameters.get(key)
        if p is None:
            rows.append((_LABELS[key], "—", "—", _UNITS.get(key, ""), "missing", "—"))
            continue
        value = f"{p.value:g}" if isinstance(p.value, float) else p.value
        rows.append((_LABELS[key], value, p.rounded, _UNITS.get(key, ""), p.band, p.score))
    table(
        f"NEWS2 (SpO2 scale {result.spo2_scale})",
        ("Parameter", "Value", "Read as", "Unit", "Band", "Score"),
        rows,
    )
    typer.echo(f"Score {result.score}: {result.band} risk, {result.clinical_response}.")
    if result.any_single_3:
        typer.echo("A single parameter scores 3.")
    if not result.complete:
        typer.echo(f"Partial: {partial_note(result)}.")
