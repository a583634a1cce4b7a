"""The launchers and the handle against a real nats-server and a real worker: return
codes as NVFlare knows them, terminate, start failures, and NATS going away."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import pytest
from fake_site import AUTH_TOKEN, FakeSite
from harness import NatsServer, TcpProxy, Worker, free_port
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.job_launcher_spec import JobReturnCode

from flare_launcher_nvflare import ClientJobLauncher, JobLaunchError, NatsUnreachable, ServerJobLauncher

#: Generous, for a loaded 2-core machine.
TIMEOUT_S = 90


@pytest.fixture
def site(tmp_path: Path) -> FakeSite:
    return FakeSite(tmp_path)


@pytest.fixture
def launchers(nats_server: NatsServer) -> Iterator[Callable[..., ClientJobLauncher]]:
    """Makes client launchers on the test's server; closes them at the end."""
    made: list[ClientJobLauncher] = []

    def make(**kwargs) -> ClientJobLauncher:
        made.append(ClientJobLauncher(nats_url=nats_server.url, **kwargs))
        return made[-1]

    yield make
    for launcher in made:
        launcher.close()


def wait_in_thread(handle) -> threading.Thread:
    t = threading.Thread(target=handle.wait, daemon=True)
    t.start()
    return t


def test_registers_itself_before_a_job_launch() -> None:
    for launcher in (ClientJobLauncher(), ServerJobLauncher()):
        ctx = FLContext()
        launcher.handle_event(EventType.BEFORE_JOB_LAUNCH, ctx)
        assert ctx.get_prop(FLContextKey.JOB_LAUNCHER) == [launcher]


def test_a_job_that_succeeds_returns_success(launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, worker: Worker, site: FakeSite) -> None:
    meta, ctx = site.job("exit=0")
    handle = launchers().launch_job(meta, ctx)
    handle.wait()
    assert handle.poll() == JobReturnCode.SUCCESS
    seen = site.seen(meta)
    assert seen["token"] == AUTH_TOKEN, "the job credentials travel in secret_env, as a variable of the job"
    assert AUTH_TOKEN not in seen["argv"], "and not on the command line"
    assert seen["cwd"] == str(Path.cwd())
    assert not [line for line in worker.process.lines if AUTH_TOKEN in line], "the worker logs no env value"


def test_a_process_job_gets_the_gpus_its_resource_spec_asks_for(
    launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, site: FakeSite, tmp_path: Path
) -> None:
    gpu_worker = Worker(
        nats_server, tmp_path, "gpu", "--resource-policy", "gpu", "--ignore-host", "--gpus", "0,1"
    )
    try:
        launcher = launchers()
        seen = {}
        for wanted in (2, 0):
            meta, ctx = site.job("exit=0", resource_spec={"num_of_gpus": wanted})
            handle = launcher.launch_job(meta, ctx)
            handle.wait()
            assert handle.poll() == JobReturnCode.SUCCESS
            seen[wanted] = site.seen(meta)["cuda"]
        assert seen == {2: "0,1", 0: ""}, "the worker's GPU policy hands out what the job asks for"
    finally:
        gpu_worker.stop()


@pytest.mark.parametrize("exit_code, expected", [(1, 1), (101, 101), (3, JobReturnCode.EXECUTION_ERROR)])
def test_failure_codes_reach_nvflare(launchers: Callable[..., ClientJobLauncher], 
    nats_server: NatsServer, worker: Worker, site: FakeSite, exit_code: int, expected: int
) -> None:
    meta, ctx = site.job(f"exit={exit_code}")
    handle = launchers().launch_job(meta, ctx)
    handle.wait()
    assert handle.poll() == expected


def test_poll_says_unknown_until_the_end_and_terminate_aborts(launchers: Callable[..., ClientJobLauncher], 
    nats_server: NatsServer, worker: Worker, site: FakeSite
) -> None:
    meta, ctx = site.job("block")
    handle = launchers(terminate_grace=5).launch_job(meta, ctx)
    assert handle.poll() == JobReturnCode.UNKNOWN
    waiting = wait_in_thread(handle)
    handle.terminate()
    waiting.join(TIMEOUT_S)
    assert not waiting.is_alive()
    assert handle.poll() == JobReturnCode.ABORTED
    assert handle.events.state == "terminated"


def test_a_terminate_for_heartbeat_cleanup_aborts_the_job_too(launchers: Callable[..., ClientJobLauncher],
    nats_server: NatsServer, worker: Worker, site: FakeSite
) -> None:
    """NVFlare 2.9's client executor calls `terminate(heartbeat_cleanup=True)` on
    some of its abort paths (the server no longer knows the job)."""
    meta, ctx = site.job("block")
    handle = launchers(terminate_grace=5).launch_job(meta, ctx)
    waiting = wait_in_thread(handle)
    handle.terminate(heartbeat_cleanup=True)
    waiting.join(TIMEOUT_S)
    assert not waiting.is_alive()
    assert handle.poll() == JobReturnCode.ABORTED


def test_an_abort_that_comes_before_the_launch_is_not_lost(
    launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, worker: Worker, site: FakeSite
) -> None:
    meta, ctx = site.job("block")
    launcher = launchers()
    launcher.follow(f"site-1_{meta['job_id']}").terminate()
    handle = launcher.launch_job(meta, ctx)
    assert handle.poll() == JobReturnCode.ABORTED
    assert not (site.root / f"{meta['job_id']}.seen.json").exists(), "the job never ran"


def test_a_job_that_cannot_start_raises(launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, worker: Worker) -> None:
    launcher = launchers()
    request = {"job_id": "site-1_cannot-start", "command": ["/nonexistent/program"]}
    with pytest.raises(JobLaunchError, match="SpawnFailed"):
        launcher.submit(request)


def test_wait_survives_a_nats_restart(launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, worker: Worker, site: FakeSite, tmp_path: Path) -> None:
    release = tmp_path / "release"
    meta, ctx = site.job(f"until={release}")
    handle = launchers().launch_job(meta, ctx)
    waiting = wait_in_thread(handle)
    nats_server.stop()
    release.touch()  # the job ends while NATS is away
    assert waiting.is_alive()
    nats_server.start()
    waiting.join(TIMEOUT_S)
    assert not waiting.is_alive(), "wait() returns once NATS is back"
    assert handle.poll() == JobReturnCode.SUCCESS


def test_wait_gives_up_when_nats_stays_away_and_reports_an_infrastructure_error(launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, worker: Worker, site: FakeSite) -> None:
    meta, ctx = site.job("block")
    handle = launchers(nats_give_up=2).launch_job(meta, ctx)
    nats_server.stop()
    waiting = wait_in_thread(handle)
    waiting.join(TIMEOUT_S)
    assert not waiting.is_alive()
    assert handle.poll() == JobReturnCode.INFRASTRUCTURE_ERROR, "a job given up on is a failure NVFlare reports"
    nats_server.start()  # so that the worker can end the job at the test's end


def test_a_job_no_worker_starts_in_time_raises_and_never_starts(
    launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, tmp_path: Path, site: FakeSite
) -> None:
    Worker(nats_server, tmp_path, "gone").stop()  # the streams exist, no worker pulls
    meta, ctx = site.job("exit=0")
    launcher = launchers(start_timeout=1)
    with pytest.raises(JobLaunchError, match="reported its start"):
        launcher.launch_job(meta, ctx)
    assert queued_requests(nats_server) == 0, "the request was taken back from the queue"


def queued_requests(nats_server: NatsServer) -> int:
    async def count() -> int:
        nc = await nats.connect(nats_server.url)
        try:
            return (await nc.jsm().stream_info("FLARE_JOBS")).state.messages
        finally:
            await nc.close()

    return asyncio.run(count())


def test_a_launch_without_nats_says_where_it_could_not_connect(site: FakeSite) -> None:
    launcher = ClientJobLauncher(nats_url=f"nats://someone:secret@127.0.0.1:{free_port()}")
    meta, ctx = site.job("exit=0")
    with pytest.raises(NatsUnreachable, match="cannot connect to NATS at nats://127.0.0.1:") as raised:
        launcher.launch_job(meta, ctx)
    assert "secret" not in str(raised.value)
    launcher.close()


def test_a_terminate_sent_while_the_jobs_worker_is_cut_off_returns_at_once_and_ends_the_job(
    launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, site: FakeSite, tmp_path: Path
) -> None:
    """The owner's link to NATS is cut while NVFlare terminates its process job:
    terminate() returns at once (nobody answers), the handle keeps sending the
    terminate, and once the link is back the owner (a process job stays with its
    host) carries it out."""
    link = TcpProxy(nats_server.port)
    owner = Worker(link, tmp_path, "w1", "--lease-s", "3", "--drain-timeout", "5")
    try:
        meta, ctx = site.job("block")
        handle = launchers(terminate_grace=5, nats_give_up=TIMEOUT_S).launch_job(meta, ctx)
        waiting = wait_in_thread(handle)
        link.cut()
        started = time.monotonic()
        handle.terminate()
        assert time.monotonic() - started < 10, "terminate() does not wait for the cut-off worker"
        time.sleep(8)  # past the owner's lease
        assert waiting.is_alive(), "nobody could stop the job while its host's worker was cut off"
        link.restore()
        waiting.join(TIMEOUT_S)
        assert not waiting.is_alive()
        assert handle.events.state == "terminated", handle.events.message
        assert handle.poll() == JobReturnCode.ABORTED
    finally:
        owner.stop()
        link.cut()


def test_a_terminate_recorded_by_another_worker_while_the_owner_was_cut_off_is_carried_out_by_the_owner(
    launchers: Callable[..., ClientJobLauncher], nats_server: NatsServer, site: FakeSite, tmp_path: Path
) -> None:
    """As above with a second worker: it writes the stop into the job's record
    once the cut-off owner's lease lapses (a process job stays with its host, so
    it cannot take the job over); the owner, back, keeps the job despite that
    write and carries the stop out."""
    link = TcpProxy(nats_server.port)
    owner = Worker(link, tmp_path, "w1", "--lease-s", "3", "--drain-timeout", "5")
    other = None
    try:
        meta, ctx = site.job("block")
        handle = launchers(terminate_grace=5, nats_give_up=TIMEOUT_S).launch_job(meta, ctx)
        waiting = wait_in_thread(handle)
        # Started once the job runs on w1: the launch was w1's to take.
        other = Worker(nats_server, tmp_path, "w2", "--lease-s", "3", "--drain-timeout", "5")
        link.cut()
        handle.terminate()
        time.sleep(8)  # past the owner's lease: w2 records the stop
        assert waiting.is_alive()
        link.restore()
        waiting.join(TIMEOUT_S)
        assert not waiting.is_alive(), "the owner never carried out the stop recorded meanwhile"
        assert handle.events.state == "terminated", handle.events.message
        assert handle.poll() == JobReturnCode.ABORTED
    finally:
        if other is not None:
            other.stop()
        owner.stop()
        link.cut()
