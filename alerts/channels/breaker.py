"""A circuit breaker per destination: a receiver that hangs or refuses costs one timeout, not one per
notification queued for it.

After a failure that says the destination itself is unreachable (a timeout, a refused or dropped
connection), further sends to it fail at once with a retryable error until a cool-down has passed
(5 s, doubling up to 5 minutes while it keeps failing); then one send tries again (half-open) while
the others keep failing fast. A success closes the circuit. The outbox's own backoff still applies
per notification, so nothing is dropped: rows wait and go out once the receiver answers.

Hand-written rather than a library: libraries (pybreaker, circuitbreaker) keep one breaker per
decorated function, while a channel needs one per destination, created as destinations appear.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from alerts.channels.base import ChannelError

FIRST_COOL_DOWN_S = 5.0
MAX_COOL_DOWN_S = 300.0


@dataclass
class _State:
    failures: int = 0
    open_until: float = 0.0
    probing: bool = False


class Breakers:
    """Thread-safe: the outbox may send to one channel from several threads."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, _State] = {}
        self._lock = threading.Lock()

    def before(self, destination: str, who: str) -> None:
        """Raise ChannelError (retryable) when `destination`'s circuit is open; otherwise let the
        send through (as the one probe, when the cool-down has just passed)."""
        with self._lock:
            state = self._states.get(destination)
            if state is None or state.failures == 0:
                return
            now = self._clock()
            if now >= state.open_until and not state.probing:
                state.probing = True
                return
            failures, wait = state.failures, max(0.0, state.open_until - now)
        raise ChannelError(
            f"{who} at {destination}: not tried, the destination failed {failures} time(s) "
            f"in a row (circuit open, next try in {wait:.0f} s)"
        )

    def succeeded(self, destination: str) -> None:
        with self._lock:
            self._states.pop(destination, None)

    def failed(self, destination: str) -> None:
        """Record that `destination` did not answer (a timeout or a connection failure)."""
        with self._lock:
            state = self._states.setdefault(destination, _State())
            state.failures += 1
            state.probing = False
            cool_down = min(MAX_COOL_DOWN_S, FIRST_COOL_DOWN_S * 2 ** (state.failures - 1))
            state.open_until = self._clock() + cool_down

    def released(self, destination: str) -> None:
        """The send ended without saying anything about the destination (e.g. a refused recipient):
        a probe slot it held is free again."""
        with self._lock:
            state = self._states.get(destination)
            if state is not None:
                state.probing = False

    def is_open(self, destination: str) -> bool:
        with self._lock:
            state = self._states.get(destination)
            return state is not None and state.failures > 0
