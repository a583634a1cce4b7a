"""A job's output, fetched from the worker that owns it (docs/protocol.md, OutputRequest).

The job's record (`P.status.JOB_ID`) names its worker, which answers
`P.worker.WORKER.logs` with one bounded chunk per request. When the worker does
not answer, or says the job is another's (it was handed over), the record is read
again and the new owner asked for the same offset.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import NoRespondersError, TimeoutError

from .protocol import Subjects, bounded

#: Most bytes one answer carries (the worker's own limit).
MAX_CHUNK = 256 * 1024
#: Times the record is read again while the owner does not answer.
OWNER_TRIES = 10
#: Seconds between those tries.
RETRY_PAUSE_S = 0.5


class OutputUnavailable(RuntimeError):
    """The job's output cannot be read: an unknown job, or no worker answers for it."""


@dataclass
class Output:
    """Bytes of a job's output from `offset` on."""

    data: bytes
    offset: int
    #: The output's size as its worker holds it now.
    size: int
    #: Whether the job ended and `data` reaches the end of its output.
    complete: bool


async def fetch(nc: Client, subjects: Subjects, job_id: str, limit: int, from_end: bool, timeout: float) -> Output:
    """Up to `limit` bytes of the job's output: its first, or with `from_end` its last."""
    owner = None
    start = 0
    if from_end:
        owner, first = await _chunk(nc, subjects, job_id, owner, 0, 0, timeout)
        start = max(first["size"] - limit, 0)
    data = bytearray()
    offset, size, complete = start, start, False
    while len(data) < limit:
        owner, chunk = await _chunk(nc, subjects, job_id, owner, offset, min(limit - len(data), MAX_CHUNK), timeout)
        piece = base64.b64decode(chunk["data"])
        data += piece
        offset, size, complete = chunk["next_offset"], chunk["size"], chunk["complete"]
        if not piece or complete:
            break
    return Output(bytes(data), start, size, complete)


async def _chunk(
    nc: Client, subjects: Subjects, job_id: str, owner: str | None, offset: int, max_bytes: int, timeout: float
) -> tuple[str, dict]:
    """One chunk from the job's owner (found from the record when `owner` is None)."""
    body = json.dumps({"job_id": job_id, "offset": offset, "max_bytes": max_bytes}).encode()
    last = "no answer"
    for _ in range(OWNER_TRIES):
        if owner is None:
            owner = _answer(await nc.request(subjects.status(job_id), b"", timeout=timeout))["worker"]
        try:
            reply = _answer(await nc.request(subjects.worker_logs(owner), body, timeout=timeout))
            return owner, reply
        except (NoRespondersError, TimeoutError) as e:
            last = f"worker {owner}: {e!r}"
        except _Moved as e:
            last = str(e)
        owner = None
        await asyncio.sleep(RETRY_PAUSE_S)
    raise OutputUnavailable(f"job {job_id}: no worker answers for its output ({bounded(last)})")


class _Moved(Exception):
    """The worker asked says the job is another's."""


def _answer(msg) -> dict:
    """The answer's body; an error reply raised."""
    body = json.loads(msg.data)
    if msg.headers and "Nats-Service-Error-Code" in msg.headers:
        if body.get("error") in ("not_owner", "unavailable"):
            raise _Moved(bounded(body.get("message")))
        raise OutputUnavailable(f"{body.get('error')}: {bounded(body.get('message'))}")
    return body
