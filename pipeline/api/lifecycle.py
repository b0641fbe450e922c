"""The app's lifespan: at start, load the artifacts (and poll for new ones), install the drain on
SIGTERM, start the impression log's writer and refresh the metrics every poll interval; at the end
(after the last answer), publish what the log still holds, stop all of it and close the store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from pipeline.api.drain import DRAIN
from pipeline.api.state import ApiState


async def _refresh_metrics(api: ApiState) -> None:
    while True:
        api.metrics.refresh()
        await asyncio.sleep(api.artifacts.poll_interval_s)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start and stop what ``app.state.api`` holds around the app's life."""
    api: ApiState = app.state.api
    api.artifacts.start()
    if api.log is not None:
        api.log.start()
    DRAIN.install(api.limits.drain_s)
    refresher = asyncio.create_task(_refresh_metrics(api))
    yield
    refresher.cancel()
    if api.log is not None:
        await asyncio.to_thread(api.log.close)
        api.metrics.refresh()
    api.metrics.close()
    await api.artifacts.store.close_async()
    api.artifacts.stop()
