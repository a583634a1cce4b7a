"""End to end: a real NVFlare 2.9.0 POC whose every job process is started by a
flare-launcher worker. A numpy federated-averaging job completes; an aborted job
ends ABORTED; and a job whose client processes do not stop by themselves ends
through the terminate request."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from harness import NatsServer, Worker
from nats.js.errors import NotFoundError
from nvflare.fuel.flare_api.flare_api import Session
from poc import CLIENTS, SITES, Poc

from flare_launcher_nvflare import ClientJobLauncher
from flare_launcher_nvflare.protocol import job_id_for

JOBS = Path(__file__).parent / "jobs"
WORKER_ID = "poc-worker"
#: Generous, for a loaded 2-core machine.
JOB_TIMEOUT_S = 300


class PocSystem:
    def __init__(self, nats_server: NatsServer, poc: Poc, session: Session, markers: Path) -> None:
        self.nats = nats_server
        self.poc = poc
        self.session = session
        self.markers = markers

    def submit(self, job: str) -> str:
        """Submits a copy of the job folder (NVFlare signs the folder it submits, in place)."""
        copy = Path(shutil.copytree(JOBS / job, self.poc.root / "submitted" / f"{job}-{uuid.uuid4().hex}"))
        return self.session.submit_job(str(copy))

    def wait_for_status(self, job_id: str, done: tuple[str, ...]) -> str:
        """Polls the job's status (NVFlare offers nothing to await) until it starts with one of `done`."""
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while True:
            status = self.session.get_job_meta(job_id).get("status", "")
            if status.startswith(done):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {status}\n{self.poc.logs()}")
            time.sleep(0.1)

    def events(self, nvflare_job_id: str) -> dict[str, list[dict]]:
        """Every event in the stream of each site's process of the job, once each has ended."""
        follower = ClientJobLauncher(nats_url=self.nats.url)
        try:
            deadline = time.monotonic() + JOB_TIMEOUT_S
            for site in SITES:
                ended = follower.follow(job_id_for(site, nvflare_job_id)).await_states(frozenset(), deadline)
                assert ended, f"{site}'s process of job {nvflare_job_id} did not end\n{self.poc.logs()}"
        finally:
            follower.close()
        return asyncio.run(self._events(nvflare_job_id))

    async def _events(self, nvflare_job_id: str) -> dict[str, list[dict]]:
        nc = await nats.connect(self.nats.url)
        try:
            js = nc.jetstream()
            found: dict[str, list[dict]] = {}
            for site in SITES:
                subject = f"flare.jobs.events.{job_id_for(site, nvflare_job_id)}"
                found[site], seq = [], 1
                while True:
                    try:
                        msg = await js.get_msg("FLARE_JOB_EVENTS", seq, subject=subject, next=True)
                    except NotFoundError:
                        break
                    found[site].append(json.loads(msg.data))
                    seq = msg.seq + 1
            return found
        finally:
            await nc.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PocSystem]:
    root = tmp_path_factory.mktemp("poc")
    server = NatsServer(root)
    server.start()
    worker = Worker(server, root, WORKER_ID, "--drain-timeout", "5")
    markers = root / "markers"
    markers.mkdir()
    poc = Poc(root, server.url)
    poc.env["NVFLARE_TEST_MARKER_DIR"] = str(markers)
    try:
        session = poc.start()
        yield PocSystem(server, poc, session, markers)
    finally:
        poc.stop()
        worker.stop()
        server.stop()


def test_a_numpy_fedavg_job_completes_with_every_process_started_by_a_worker(system: PocSystem) -> None:
    submitted = time.monotonic()
    job_id = system.submit("numpy-sag")
    system.wait_for_status(job_id, ("RUNNING", "FINISHED"))
    running = time.monotonic()
    status = system.wait_for_status(job_id, ("FINISHED",))
    done = time.monotonic()
    print(f"submit to RUNNING {running - submitted:.1f} s, submit to done {done - submitted:.1f} s")
    assert status == "FINISHED:COMPLETED", system.poc.logs()
    for site, events in system.events(job_id).items():
        states = [e["state"] for e in events]
        assert "running" in states, f"{site}: {events}"
        assert states[-1] == "succeeded", f"{site}: {events}"
        assert events[-1]["return_code"] == 0
        assert {e["worker"] for e in events} == {WORKER_ID}


def test_an_aborted_job_ends_aborted(system: PocSystem) -> None:
    job_id = system.submit("long")
    system.wait_for_status(job_id, ("RUNNING",))
    system.session.abort_job(job_id)
    assert system.wait_for_status(job_id, ("FINISHED",)) == "FINISHED:ABORTED"
    for site, events in system.events(job_id).items():
        assert events[-1]["return_code"] is not None, f"{site}: {events}"
        assert "running" in [e["state"] for e in events], f"{site}: {events}"


def test_a_client_job_that_does_not_stop_by_itself_ends_through_the_terminate_request(system: PocSystem) -> None:
    job_id = system.submit("stubborn")
    stuck = [system.markers / f"{client}-{job_id}" for client in CLIENTS]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while not all(m.exists() for m in stuck):  # the trainers leave these files once stuck
        assert time.monotonic() < deadline, system.poc.logs()
        time.sleep(0.1)
    system.session.abort_job(job_id)
    assert system.wait_for_status(job_id, ("FINISHED",)) == "FINISHED:ABORTED"
    events = system.events(job_id)
    for client in CLIENTS:
        end = events[client][-1]
        assert (end["state"], end["reason"], end["return_code"]) == ("terminated", "TerminateRequested", 9), end
