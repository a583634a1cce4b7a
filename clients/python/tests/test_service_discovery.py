"""Workers found through NATS's service discovery (the `$SRV` subjects of the NATS
micro service protocol), asked with nats-py rather than the project's own client."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import nats
from harness import NatsServer, Worker

SERVICE = "flare-launcher"
#: How long a discovery question collects answers: every worker answers at once,
#: but a loaded machine may be slow.
GATHER_S = 2.0


async def gather(nc: nats.NATS, subject: str) -> list[dict]:
    """Every answer to one question on `subject` within GATHER_S."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    await nc.publish(subject, b"", reply=inbox)
    answers: list[dict] = []
    deadline = asyncio.get_running_loop().time() + GATHER_S
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            msg = await sub.next_msg(timeout=left)
        except nats.errors.TimeoutError:
            break
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            break  # no responders: nobody is registered
        answers.append(json.loads(msg.data))
    await sub.unsubscribe()
    return answers


def ask(url: str, subject: str) -> list[dict]:
    async def run() -> list[dict]:
        nc = await nats.connect(url)
        try:
            return await gather(nc, subject)
        finally:
            await nc.close()

    return asyncio.run(run())


def request(url: str, subject: str) -> bytes:
    async def run() -> bytes:
        nc = await nats.connect(url)
        try:
            return (await nc.request(subject, b"", timeout=10)).data
        finally:
            await nc.close()

    return asyncio.run(run())


def test_every_worker_answers_ping_and_info_with_its_id_and_endpoints(nats_server: NatsServer, tmp_path: Path) -> None:
    workers = [Worker(nats_server, tmp_path, name, "--pool", "gpu-a") for name in ("w1", "w2")]
    try:
        pongs = ask(nats_server.url, f"$SRV.PING.{SERVICE}")
        assert sorted(p["metadata"]["worker_id"] for p in pongs) == ["w1", "w2"], pongs
        assert all(p["type"] == "io.nats.micro.v1.ping_response" for p in pongs)
        assert all(p["metadata"]["pool"] == "gpu-a" and p["metadata"]["backends"] == "process" for p in pongs)

        infos = ask(nats_server.url, f"$SRV.INFO.{SERVICE}")
        assert len(infos) == 2, infos
        for info in infos:
            worker_id = info["metadata"]["worker_id"]
            endpoints = {e["name"]: e for e in info["endpoints"]}
            assert endpoints["status"]["subject"] == "flare.jobs.status.>"
            assert endpoints["terminate"]["subject"] == "flare.jobs.terminate.>"
            # One worker of all answers a job's status or terminate.
            assert endpoints["status"]["queue_group"] == endpoints["terminate"]["queue_group"] == "flare-launcher"
            assert endpoints["terminate_forwarded"]["subject"] == f"flare.jobs.worker.{worker_id}.terminate.>"
            assert endpoints["resources"]["subject"] == f"flare.jobs.worker.{worker_id}.resources"
            assert endpoints["logs"]["subject"] == f"flare.jobs.worker.{worker_id}.logs"
            # Every worker of the pool answers a pool question: each in a queue group of its own.
            assert endpoints["pool_resources"]["queue_group"] == f"{SERVICE}-{worker_id}"
    finally:
        for worker in workers:
            worker.stop()


def test_stats_count_the_requests_a_worker_answered_and_a_stopped_worker_leaves(nats_server: NatsServer, tmp_path: Path) -> None:
    worker = Worker(nats_server, tmp_path, "w1")
    try:
        (pong,) = ask(nats_server.url, f"$SRV.PING.{SERVICE}")
        instance = pong["id"]
        for _ in range(3):
            # An unknown job: the answer is an error reply, and still a request answered.
            reply = json.loads(request(nats_server.url, "flare.jobs.status.nosuchjob"))
            assert reply["error"] == "not_found"
        (stats,) = ask(nats_server.url, f"$SRV.STATS.{SERVICE}.{instance}")
        assert stats["type"] == "io.nats.micro.v1.stats_response"
        by_name = {e["name"]: e for e in stats["endpoints"]}
        assert by_name["status"]["num_requests"] == 3, by_name["status"]
        assert by_name["terminate"]["num_requests"] == 0
    finally:
        worker.stop()
    assert ask(nats_server.url, f"$SRV.PING.{SERVICE}") == []
