"""How the handle reads replies to a terminate request (docs/protocol.md)."""

from __future__ import annotations

import json

import pytest

from flare_launcher_nvflare.events import JobEvents
from flare_launcher_nvflare.replies import Verdict, read_terminate_reply
from nvflare.apis.job_launcher_spec import JobReturnCode


def reply(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    "data, headers, verdict",
    [
        (reply(job_id="j", accepted=True, state="running", message="stopping"), None, Verdict.ACCEPTED),
        (reply(job_id="j", accepted=False, state="running", message="not reachable"), None, Verdict.REFUSED),
        (reply(error="unavailable", message="store timed out"), {"Nats-Service-Error-Code": "503"}, Verdict.REFUSED),
        (reply(error="unavailable", message="store timed out"), None, Verdict.REFUSED),
        (b"", {"Nats-Service-Error-Code": "503", "Nats-Service-Error": "timed out"}, Verdict.REFUSED),
        (reply(error="bad_request", message="grace_s"), {"Nats-Service-Error-Code": "400"}, Verdict.FINAL),
        (reply(error="not_found", message="no job"), {"Nats-Service-Error-Code": "404"}, Verdict.FINAL),
        (b"not json", None, Verdict.REFUSED),
    ],
)
def test_terminate_replies_are_read_as_the_protocol_says(data: bytes, headers, verdict: Verdict) -> None:
    assert read_terminate_reply(data, headers).verdict is verdict


def test_the_text_of_a_reply_is_bounded_for_the_log() -> None:
    answer = read_terminate_reply(reply(accepted=False, message="x" * 100_000 + "\nforged"), None)
    assert len(answer.text) < 1000
    assert "\n" not in answer.text


def event(state: str, return_code) -> bytes:
    return reply(job_id="j", seq=1, state=state, return_code=return_code)


@pytest.mark.parametrize("return_code", [127, 104, None])
def test_a_lost_job_is_an_infrastructure_error_whatever_the_worker_sent(return_code) -> None:
    events = JobEvents("j")
    events.apply_payload(event("lost", return_code))
    assert events.return_code() == JobReturnCode.INFRASTRUCTURE_ERROR


def test_a_job_given_up_on_is_an_infrastructure_error_unless_it_ended_first() -> None:
    running, ended = JobEvents("j"), JobEvents("j")
    running.apply_payload(event("running", None))
    ended.apply_payload(event("succeeded", 0))
    assert running.return_code() == JobReturnCode.UNKNOWN
    for events in (running, ended):
        events.give_up()
    assert running.return_code() == JobReturnCode.INFRASTRUCTURE_ERROR
    assert ended.return_code() == JobReturnCode.SUCCESS
