"""What is known of one job: the latest of its events, shared between NATS's loop
(which applies events) and NVFlare's threads (which read and wait).

Events of a job may arrive twice or out of order (a live subscription and a
replay from the stream both deliver them); only a `seq` newer than the last one
counts, and the terminal event, which is the job's last, settles it for good.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Optional

from nvflare.apis.job_launcher_spec import JobReturnCode

from .protocol import TERMINAL_STATES, bounded

log = logging.getLogger(__name__)


class JobEvents:
    """The latest event of one job, with a condition to wait for the next."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._cond = threading.Condition()
        self._seq = 0
        self._event: Optional[dict] = None
        self._given_up = False

    def apply_payload(self, payload: bytes) -> None:
        """Takes one JobEvent as received; ignores what is not one of this job's events."""
        try:
            event = json.loads(payload)
        except ValueError:
            log.warning("flare-launcher: job %s: an event that is not JSON was ignored", self.job_id)
            return
        if not isinstance(event, dict) or event.get("job_id") != self.job_id:
            return
        seq = event.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return
        with self._cond:
            if seq <= self._seq or self.terminal:
                return
            self._seq = seq
            self._event = event
            self._cond.notify_all()
        log.info(
            "flare-launcher: job %s #%d %s%s",
            self.job_id,
            seq,
            bounded(event.get("state")),
            f" return_code={event.get('return_code')}" if self.terminal else "",
        )

    @property
    def state(self) -> Optional[str]:
        event = self._event
        return event.get("state") if event else None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def message(self) -> str:
        event = self._event or {}
        return bounded(f"{event.get('reason') or ''}: {event.get('message') or ''}")

    def return_code(self) -> int:
        """The terminal event's return code; INFRASTRUCTURE_ERROR for a `lost` job
        (whatever a worker of an earlier protocol revision sent, which was
        UNKNOWN) and for one given up on before its end (see `give_up`);
        UNKNOWN while the job has not ended."""
        event = self._event
        if not event or event.get("state") not in TERMINAL_STATES:
            return JobReturnCode.INFRASTRUCTURE_ERROR if self._given_up else JobReturnCode.UNKNOWN
        code = event.get("return_code")
        if event.get("state") == "lost" or not isinstance(code, int) or isinstance(code, bool):
            return JobReturnCode.INFRASTRUCTURE_ERROR
        return code

    def give_up(self) -> None:
        """Marks the job as given up on (its end could not be learnt): from now on
        its return code says so, unless its terminal event came first."""
        self._given_up = True

    def wait_for(self, states: frozenset[str], timeout: float) -> bool:
        """Blocks up to `timeout` seconds until the job is in one of `states` or has
        ended; True if it is."""
        with self._cond:
            return self._cond.wait_for(lambda: self.state in states or self.terminal, timeout)
