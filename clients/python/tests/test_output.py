"""A job's output fetched through the launcher from the worker that ran it: all of
it in chunks, its last bytes, and a clear error for a job nobody knows."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_site import FakeSite
from harness import NatsServer, Worker

from flare_launcher_nvflare import ClientJobLauncher, OutputUnavailable


def test_a_jobs_output_is_fetched_whole_or_its_end(nats_server: NatsServer, worker: Worker, tmp_path: Path) -> None:
    site = FakeSite(tmp_path)
    launcher = ClientJobLauncher(nats_url=nats_server.url)
    try:
        meta, ctx = site.job("say=40000")
        handle = launcher.launch_job(meta, ctx)
        handle.wait()
        said = "".join(f"line {i}\n" for i in range(1, 40001)).encode()
        whole = launcher.fetch_output(handle.job_id, limit=10**8, from_end=False)
        assert said in whole.data, "more than one chunk's worth, every byte once"
        assert (whole.offset, whole.size, whole.complete) == (0, len(whole.data), True)

        last = launcher.fetch_output(handle.job_id, limit=100)
        assert last.data == whole.data[-100:]
        assert (last.offset, last.complete) == (whole.size - 100, True)

        first = launcher.fetch_output(handle.job_id, limit=10, from_end=False)
        assert (first.data, first.complete) == (whole.data[:10], False)

        with pytest.raises(OutputUnavailable, match="not_found"):
            launcher.fetch_output("site-1_no-such-job")
    finally:
        launcher.close()
