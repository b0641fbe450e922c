"""The read paths stream: an extract's peak memory does not grow with the day's rows (a real BigQuery API
endpoint on loopback, the extract in a fresh process), also when the server's bytes arrive late."""

import contextlib
import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from pipeline_devtools.bigquery_emulator import bigquery_emulator, load_table, with_day
from pipeline_devtools.delayed_link import delayed_link

MEMORY_DAYS = ("2026-01-01", "2026-01-02", "2026-01-03")  # a warm-up day, then a few pages and many


@pytest.fixture(scope="module")
def memory_emulator():
    """An emulator and ``load(page, pages)``: a dataset (loaded on the first ask for it) whose clicks hold
    1,000 rows on the warm-up day, then ``pages[0]`` and ``pages[1]`` pages of ``page`` rows; its name and
    rows by day."""
    rng = np.random.default_rng(0)
    with bigquery_emulator() as emulator:
        client, loaded = emulator.client(), {}

        def load(page: int, pages: tuple[int, int]) -> tuple[str, dict[str, int]]:
            if (page, pages) not in loaded:
                dataset = f"memory_{len(loaded)}"
                client.create_dataset(dataset)
                days = dict(zip(MEMORY_DAYS, (1_000, pages[0] * page, pages[1] * page), strict=True))
                for n, (day, rows) in enumerate(days.items()):
                    load_table(client, f"{emulator.project}.{dataset}.clicks", with_day(pa.table({
                        "user_id": rng.integers(0, 10**6, rows), "restaurant_id": rng.integers(0, 10**5, rows),
                        "click": rng.integers(0, 2, rows)}), dt.date.fromisoformat(day)), "day", append=n > 0)
                loaded[page, pages] = dataset, days
            return loaded[page, pages]

        yield emulator, load


@pytest.mark.slow
@pytest.mark.parametrize("read_api, page_rows, pages, link_delay_s", [
    ("rest", 2_000, (2, 20), 0.0), ("storage", 20_000, (4, 16), 0.0),
    # The server's bytes 50 ms late, as over a long link or from a server slowed by a busy machine:
    # the stream must not run further ahead of the extract for it.
    ("storage", 20_000, (4, 16), 0.05)])
def test_extract_memory_does_not_grow_with_the_table(memory_emulator, read_api, page_rows, pages, link_delay_s):
    """Peak RSS growth of an extract in a fresh process, for a day of a few pages and one of at least 10
    pages. A REST page is ``page_rows``; a Storage page is the server's message (the emulator's: 1M rows)."""
    emulator, load = memory_emulator
    page = page_rows if read_api == "rest" else 1_000_000
    dataset, days = load(page, pages)
    growth = {}
    link = delayed_link(emulator.storage_endpoint, link_delay_s) if link_delay_s else contextlib.nullcontext(
        emulator.storage_endpoint)
    with link as storage_endpoint:
        for day in MEMORY_DAYS[1:]:
            out = subprocess.run([sys.executable, "-m", "pipeline_devtools.extract_peak_rss", emulator.endpoint,
                                  storage_endpoint, emulator.project, dataset, read_api, "auto",
                                  str(page_rows), MEMORY_DAYS[0], day], capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, out.stderr[-3000:]
            report = json.loads(out.stdout.splitlines()[-1])
            assert report["rows"] == days[day] and report["bigquery_pages"] >= days[day] // page
            growth[day] = report["peak_growth_mb"]
    small, large = growth[MEMORY_DAYS[1]], growth[MEMORY_DAYS[2]]
    assert large <= 1.3 * small + 20, growth  # 4× or 10× the rows, about the same memory
