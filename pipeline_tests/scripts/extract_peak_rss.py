"""Extract one day of clicks from a BigQuery endpoint and print how much the peak RSS grew while
doing it (after a warm-up extract of a small day), as JSON: what the streaming test compares.

usage: extract_peak_rss.py ENDPOINT STORAGE_ENDPOINT PROJECT DATASET READ_API PAGE_ROWS WARM_DAY BIG_DAY
"""

import json
import sys
import tempfile
from pathlib import Path

from devtools.process_metrics import peak_rss_mb, reset_peak_rss
from pipeline.data.bigquery import BigQuerySettings, BigQuerySource


def main() -> None:
    endpoint, storage_endpoint, project, dataset, read_api, page_rows, warm_day, big_day = sys.argv[1:]
    source = BigQuerySource(BigQuerySettings(project=project, dataset=dataset, endpoint=endpoint,
                                             storage_endpoint=storage_endpoint, read_api=read_api,
                                             page_rows=int(page_rows)))
    with tempfile.TemporaryDirectory() as scratch:
        warm = source.extract_clicks(warm_day, Path(scratch))  # clients, imports, one page's buffers
        (Path(scratch) / "part-00000.parquet").unlink()
        assert reset_peak_rss(), "cannot reset the peak RSS here (/proc/self/clear_refs)"
        before = peak_rss_mb()
        big = source.extract_clicks(big_day, Path(scratch))
        print(json.dumps({"warm_rows": warm.rows, "rows": big.rows, "pages": big.metadata["bigquery_pages"],
                          "peak_growth_mb": round(peak_rss_mb() - before, 1), "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
