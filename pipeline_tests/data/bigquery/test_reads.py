"""The read paths stream: an extract's peak memory does not grow with the day's rows (a real BigQuery API
endpoint on loopback, the extract in a fresh process)."""

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from pipeline_devtools.bigquery_emulator import bigquery_emulator, load_table, with_day


@pytest.mark.slow
@pytest.mark.parametrize("read_api, page_rows, pages", [("rest", 2_000, (2, 20)), ("storage", 20_000, (4, 16))])
def test_extract_memory_does_not_grow_with_the_table(read_api, page_rows, pages):
    """Peak RSS growth of an extract in a fresh process, for a day of a few pages and one of at least 10
    pages. A REST page is ``page_rows``; a Storage page is the server's message (the emulator's: 1M rows)."""
    page = page_rows if read_api == "rest" else 1_000_000
    rng = np.random.default_rng(0)
    with bigquery_emulator() as emulator:
        client = emulator.client()
        client.create_dataset("memory")
        days = {"2026-01-01": 1_000, "2026-01-02": pages[0] * page, "2026-01-03": pages[1] * page}
        for n, (day, rows) in enumerate(days.items()):
            load_table(client, f"{emulator.project}.memory.clicks", with_day(pa.table({
                "user_id": rng.integers(0, 10**6, rows), "restaurant_id": rng.integers(0, 10**5, rows),
                "click": rng.integers(0, 2, rows)}), dt.date.fromisoformat(day)), "day", append=n > 0)
        growth = {}
        for day in ("2026-01-02", "2026-01-03"):
            out = subprocess.run([sys.executable, "-m", "pipeline_devtools.extract_peak_rss", emulator.endpoint,
                                  emulator.storage_endpoint, emulator.project, "memory", read_api, "auto",
                                  str(page_rows), "2026-01-01", day], capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, out.stderr[-3000:]
            report = json.loads(out.stdout.splitlines()[-1])
            assert report["rows"] == days[day] and report["bigquery_pages"] >= days[day] // page
            growth[day] = report["peak_growth_mb"]
    small, large = growth["2026-01-02"], growth["2026-01-03"]
    assert large <= 1.3 * small + 20, growth  # 4× or 10× the rows, about the same memory
