"""``invoice-sync worker`` as a process: what RQ records and what the worker writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from rq.job import Job

from coordinator.forecaster import jobs
from coordinator.forecaster.connections import with_decoding

pytestmark = pytest.mark.integration


def test_a_failed_sync_is_a_failed_job_and_every_line_the_worker_writes_is_json(
    redis_client, fake, register, settings
):
    fake.app.seed(5, seed=1)
    register("blue", fake, api_secret="wrong-secret-000")  # WHMCS refuses these credentials
    register("red", fake)
    bad = jobs.request_sync(redis_client, "blue", "missing")
    good = jobs.request_sync(redis_client, "red", "missing")
    # settings put INVOICE_SYNC_REDIS_URL, the secret key and the URL policy in os.environ.
    worker = subprocess.run(
        [sys.executable, "-m", "coordinator", "worker", "--burst"],
        env={**os.environ, "INVOICE_SYNC_LOG_LEVEL": "INFO"}, capture_output=True, text=True,
        timeout=300,
    )
    assert worker.returncode == 0, worker.stderr
    assert worker.stdout == ""
    lines = worker.stderr.splitlines()
    entries = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert len(entries) == len(lines) and all(isinstance(e, dict) for e in entries)

    raw = with_decoding(redis_client, False)
    bad_job, good_job = (Job.fetch(f"sync-{r['id']}", connection=raw) for r in (bad, good))
    assert bad_job.get_status() == "failed"
    assert good_job.get_status() == "finished"

    about_bad = [e for e in entries if bad_job.id in e["message"]]
    assert not [e for e in about_bad if "Job OK" in e["message"]]
    failure = [e for e in about_bad if e["level"] == "ERROR"]
    assert failure, about_bad
    # The traceback travels inside the JSON line, with the sync's own reason.
    assert "Traceback (most recent call last)" in failure[0]["message"]
    assert (f"SyncJobFailed: sync {bad['id']} of blue failed (whmcs_auth): "
            in failure[0]["message"])
    assert [e for e in entries if good_job.id in e["message"] and "Job OK" in e["message"]]
