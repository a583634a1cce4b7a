"""What a reply to a terminate request says, in the terms of docs/protocol.md:
a TerminateReply (`accepted` true or false) or an error reply
(`{"error", "message"}` with the `Nats-Service-Error-Code` header).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Optional

from .protocol import bounded

#: Error replies that pass: the worker could not read or write the job's record now.
TRANSIENT_ERRORS = frozenset({"unavailable"})
TRANSIENT_ERROR_CODES = frozenset({"503"})


class Verdict(enum.Enum):
    """What the sender of a terminate does next."""

    #: A worker took the terminate on: wait for the job's end.
    ACCEPTED = "accepted"
    #: Nothing was done, for a reason that passes: send it again.
    REFUSED = "refused"
    #: Nothing was done, and sending it again would change nothing.
    FINAL = "final"


@dataclass(frozen=True)
class TerminateAnswer:
    """A reply to a terminate request: the verdict, and its text, bounded for a log line."""

    verdict: Verdict
    text: str


def read_terminate_reply(data: bytes, headers: Optional[dict[str, str]]) -> TerminateAnswer:
    """Classifies one reply to a terminate request. A reply that is neither a
    TerminateReply nor an error reply counts as refused (a worker of another
    version may say more than this client knows)."""
    text = bounded(data.decode(errors="replace"))
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("accepted"), bool):
        return TerminateAnswer(Verdict.ACCEPTED if body["accepted"] else Verdict.REFUSED, text)
    code = (headers or {}).get("Nats-Service-Error-Code")
    error = body.get("error") if isinstance(body, dict) else None
    if code is None and error is None:
        return TerminateAnswer(Verdict.REFUSED, text)
    transient = code in TRANSIENT_ERROR_CODES or error in TRANSIENT_ERRORS
    return TerminateAnswer(Verdict.REFUSED if transient else Verdict.FINAL, text)
