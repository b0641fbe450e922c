"""A store read as the API awaits it: within a deadline, the breaker learning from each outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from pipeline.serving.breaker import Breaker
from pipeline.store.base import FeaturesNotLoaded, StoreUnavailable

T = TypeVar("T")


async def read_within(call: Awaitable[T], breaker: Breaker, deadline_s: float) -> T:
    """Await ``call`` (a store read) for at most ``deadline_s``; a timeout or an unavailable store
    opens ``breaker`` and raises :class:`StoreUnavailable`, an answer (even "not loaded") closes it."""
    try:
        async with asyncio.timeout(deadline_s):  # no task of its own, unlike wait_for
            result = await call
    except TimeoutError:
        breaker.failed(f"no answer within {deadline_s:g} s")
        raise StoreUnavailable(breaker.last_error) from None
    except StoreUnavailable as unavailable:
        breaker.failed(str(unavailable))
        raise
    except FeaturesNotLoaded:
        breaker.succeeded()  # the store answered
        raise
    breaker.succeeded()
    return result
