"""Extract one day of clicks from a BigQuery endpoint in this (fresh) process and print, as one JSON
line, its time, rows, the extract's metadata and how much the peak RSS grew while doing it (after a
warm-up extract of a small day, so clients and imports are not counted). Used by the streaming test
and bench/bigquery.py.

usage: python -m pipeline_devtools.extract_peak_rss ENDPOINT STORAGE_ENDPOINT PROJECT DATASET READ_API CLICKS_READ
                                           PAGE_ROWS WARM_DAY DAY
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from pipeline.data.bigquery import BigQuerySettings, BigQuerySource
from pipeline_devtools.process_metrics import peak_rss_mb, reset_peak_rss


def main() -> None:
    endpoint, storage_endpoint, project, dataset, read_api, clicks_read, page_rows, warm_day, day = sys.argv[1:]
    source = BigQuerySource(BigQuerySettings(project=project, dataset=dataset, endpoint=endpoint,
                                             storage_endpoint=storage_endpoint, read_api=read_api,
                                             clicks_read=clicks_read, page_rows=int(page_rows)))
    with tempfile.TemporaryDirectory() as scratch:
        source.extract_clicks(warm_day, Path(scratch))
        (Path(scratch) / "part-00000.parquet").unlink()
        if not reset_peak_rss():
            raise SystemExit("cannot reset the peak RSS here (/proc/self/clear_refs)")
        before, started = peak_rss_mb(), time.perf_counter()
        extract = source.extract_clicks(day, Path(scratch))
        print(json.dumps({"seconds": time.perf_counter() - started, "rows": extract.rows,
                          "peak_growth_mb": round(peak_rss_mb() - before, 1), **extract.metadata}))


if __name__ == "__main__":
    main()
