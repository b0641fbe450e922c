"""Failing fast while a dependency is down, and finding out when it is back.

After a failure (a timeout, a refused connection) every call is refused at once for
``cooldown_s`` instead of each waiting out its own timeout; the first call after the cool-down
is let through as a probe, and its outcome closes the breaker or starts another cool-down.
Used from one thread (the API's event loop), so it needs no lock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Breaker:
    def __init__(self, cooldown_s: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.cooldown_s, self.clock = cooldown_s, clock
        self._refuse_until = 0.0
        self.last_error: str | None = None   # set while open; the reason calls are refused
        self.failures = 0                    # consecutive

    @property
    def is_open(self) -> bool:
        return self.last_error is not None

    def allow(self) -> bool:
        """True when a call may go ahead: the breaker is closed, or this call is the probe."""
        now = self.clock()
        if self.last_error is None:
            return True
        if now < self._refuse_until:
            return False
        self._refuse_until = now + self.cooldown_s  # one probe per cool-down
        return True

    def succeeded(self) -> None:
        self.last_error, self.failures = None, 0

    def failed(self, reason: str) -> None:
        self.last_error = reason
        self.failures += 1
        self._refuse_until = self.clock() + self.cooldown_s

    @property
    def retry_after_s(self) -> int:
        """Whole seconds a client should wait (HTTP ``Retry-After``), at least 1."""
        return max(1, math.ceil(self._refuse_until - self.clock()))
