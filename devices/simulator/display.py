"""What a running simulation shows: a rich progress bar on a terminal, plain log lines otherwise.

A supervisor that runs `eldercare simulate` as a subprocess gets one line per episode and a count of
published messages every minute on stderr instead of a live display full of control characters.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from devices.simulator.vitals import LOCAL_TZ

REFRESH_S = 0.1


class Display(Protocol):
    def update(self, published: int, sim_time: datetime, elapsed_s: float) -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


def sim_label(moment: datetime) -> str:
    return moment.astimezone(LOCAL_TZ).strftime("%m-%d %H:%M:%S")


class NullDisplay:
    def update(self, published: int, sim_time: datetime, elapsed_s: float) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class RichDisplay:
    """A progress bar over the run's duration (pulsing when unbounded) with the message count."""

    def __init__(self, console: Console, description: str, total_s: float | None) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("[bold]{task.fields[published]}[/] messages published"),
            TextColumn("simulated {task.fields[sim]} (UTC+8)"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task: TaskID = self.progress.add_task(description, total=total_s, published=0, sim="")
        self.total_s = total_s
        self._last = 0.0
        self._state: tuple[int, datetime, float] | None = None
        self.progress.start()

    def update(self, published: int, sim_time: datetime, elapsed_s: float) -> None:
        self._state = (published, sim_time, elapsed_s)
        now = time.monotonic()
        if now - self._last < REFRESH_S:
            return  # rich redraws ten times a second anyway; don't pay for every message
        self._last = now
        self._show()

    def _show(self) -> None:
        if self._state is None:
            return
        published, sim_time, elapsed_s = self._state
        completed = min(elapsed_s, self.total_s) if self.total_s is not None else None
        self.progress.update(
            self.task, completed=completed, published=published, sim=sim_label(sim_time)
        )

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)

    def close(self) -> None:
        self._show()
        self.progress.stop()


class LineDisplay:
    """Plain lines for a log: each episode as it starts, and the count every `every_s` seconds."""

    def __init__(self, stream: TextIO, every_s: float = 60.0) -> None:
        self.stream = stream
        self.every_s = every_s
        self._next = every_s

    def update(self, published: int, sim_time: datetime, elapsed_s: float) -> None:
        if elapsed_s >= self._next:
            self._next = elapsed_s + self.every_s
            self._write(f"{published} messages published, simulated time {sim_label(sim_time)}")

    def note(self, text: str) -> None:
        self._write(text)

    def close(self) -> None:
        self.stream.flush()

    def _write(self, text: str) -> None:
        self.stream.write(f"simulate: {text}\n")
        self.stream.flush()
