"""``pipeline loadtest`` against a real server process: it reports at a fixed rate, and ramps."""

import json
import subprocess

from pipeline_devtools.api_process import BIN


def test_loadtest_cli_reports_and_ramps(served_api, tiny_dataset):
    base, _ = served_api
    done = subprocess.run([str(BIN / "pipeline"), "loadtest", "--url", base, "--requests", str(tiny_dataset.requests),
                           "--rate", "40", "--duration", "2"], capture_output=True, text=True, timeout=60)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and result["errors"] == 0 and result["requests"] == 80
    assert 30 < result["achieved_rps"] < 50 and 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]
    done = subprocess.run([str(BIN / "pipeline"), "loadtest", "--url", base, "--requests", str(tiny_dataset.requests),
                           "--duration", "1", "--ramp", "--ramp-rates", "20,50"], capture_output=True, text=True,
                          timeout=60)
    ramp = json.loads(done.stdout.strip().splitlines()[-1])
    assert ramp["max_rps"] == 50 and [s["rate"] for s in ramp["steps"]] == [20, 50]
