"""The JobHandle NVFlare holds for a job that a flare-launcher worker runs.

`poll()` answers from the latest event without blocking; `wait()` blocks until the
terminal event; `terminate()` sends the terminate request. Events come from a
subscription to the job's event subject, and, so that none is missed while NATS was
away, the job's latest event is read back from the events stream after every
reconnection and whenever a while has passed without news.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Optional

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import ConnectionClosedError, NoRespondersError, TimeoutError as NatsTimeoutError
from nats.js.errors import NotFoundError
from nvflare.apis.job_launcher_spec import JobHandleSpec

from .connection import NatsLink
from .events import JobEvents
from .protocol import Subjects, bounded

log = logging.getLogger(__name__)

#: How long one NATS round trip from NVFlare's threads may take.
CALL_TIMEOUT_S = 5.0
#: Failures that pass when NATS is back or a worker answers: worth trying again.
TRANSIENT_NATS_ERRORS = (NatsTimeoutError, NoRespondersError, TimeoutError, ConnectionClosedError, OSError)
_NOTHING_BUT_THE_END: frozenset[str] = frozenset()


class FlareJobHandle(JobHandleSpec):
    """A job run by flare-launcher, seen through its events.

    `lost_nats_give_up_s`: how long `wait()` keeps trying while NATS cannot be
    reached before it returns without the job's end (with an error in the log).
    `resync_s`: how often the latest event is read back while nothing arrives.
    """

    def __init__(
        self,
        link: NatsLink,
        subjects: Subjects,
        job_id: str,
        grace_s: int,
        lost_nats_give_up_s: float,
        resync_s: float = 15.0,
    ) -> None:
        super().__init__()
        self.job_id = job_id
        self.events = JobEvents(job_id)
        self._link = link
        self._subjects = subjects
        self._grace_s = grace_s
        self._give_up_s = lost_nats_give_up_s
        self._resync_s = resync_s
        self._sub: Optional[Subscription] = None

    # -- on the connection's loop --

    async def subscribe(self, nc: Client) -> None:
        """Follows the job's events; done before its launch request is published."""

        async def on_event(msg: Msg) -> None:
            self.events.apply_payload(msg.data)

        self._sub = await nc.subscribe(self._subjects.events(self.job_id), cb=on_event)

    async def replay(self, nc: Client) -> None:
        """Reads the job's latest event back from the events stream."""
        js = nc.jetstream()
        try:
            msg = await js.get_last_msg(self._subjects.events_stream(), self._subjects.events(self.job_id))
        except NotFoundError:
            return
        if msg.data:
            self.events.apply_payload(msg.data)

    async def unsubscribe(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            await sub.unsubscribe()

    # -- from NVFlare's threads --

    def poll(self) -> int:
        """The job's return code, or JobReturnCode.UNKNOWN while it has not ended."""
        return self.events.return_code()

    def wait(self) -> None:
        """Blocks until the job's terminal event, or until NATS has been out of reach
        for `lost_nats_give_up_s` seconds."""
        if not self.await_states(_NOTHING_BUT_THE_END, deadline=None):
            log.error(
                "flare-launcher: job %s: gave up waiting for its end: NATS out of reach for %.0f s "
                "(its return code stays UNKNOWN; the worker still runs it)",
                self.job_id,
                self._give_up_s,
            )
        self.close()

    def await_states(self, states: frozenset[str], deadline: Optional[float]) -> bool:
        """Blocks until the job is in one of `states` or has ended (True), until the
        monotonic `deadline` (False), or until NATS has been away too long (False)."""
        last_contact = time.monotonic()
        while True:
            now = time.monotonic()
            step = self._resync_s if deadline is None else min(self._resync_s, max(deadline - now, 0))
            if self.events.wait_for(states, step):
                return True
            if self.resync():
                last_contact = time.monotonic()
                if self.events.state in states or self.events.terminal:
                    return True
            elif time.monotonic() - last_contact > self._give_up_s:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def resync(self) -> bool:
        """Reads the latest event back; False when NATS could not be asked."""
        try:
            self._link.run(self.replay, CALL_TIMEOUT_S)
            return True
        except Exception as e:  # NATS away or refusing: the caller counts how long
            log.warning("flare-launcher: job %s: cannot read its events: %s", self.job_id, bounded(e))
            return False

    def terminate(self) -> None:
        """Asks the job's worker to stop it (SIGTERM, the kill after `grace_s`).

        A terminate that reaches the workers before the launch is kept by them, and
        the launch then starts nothing. Retried while no worker answers, for up to
        `lost_nats_give_up_s` seconds.
        """
        self.send_terminate(tries_for_s=self._give_up_s)

    def send_terminate(self, tries_for_s: float) -> None:
        """Sends the terminate request, trying again for up to `tries_for_s` seconds
        while it cannot be delivered (0: one try)."""
        if self.events.terminal:
            return
        body = json.dumps({"grace_s": self._grace_s}).encode()
        give_up = time.monotonic() + tries_for_s
        while True:
            try:
                reply = self._link.run(lambda nc: self._request_terminate(nc, body), CALL_TIMEOUT_S + 1)
                log.info("flare-launcher: job %s: terminate: %s", self.job_id, bounded(reply))
                return
            except TRANSIENT_NATS_ERRORS as e:
                if time.monotonic() >= give_up:
                    level = logging.ERROR if tries_for_s else logging.INFO
                    log.log(level, "flare-launcher: job %s: terminate not delivered: %s", self.job_id, bounded(e))
                    return
                time.sleep(1)

    async def _request_terminate(self, nc: Client, body: bytes) -> str:
        msg = await nc.request(
            self._subjects.terminate(self.job_id), body, timeout=CALL_TIMEOUT_S
        )
        return msg.data.decode(errors="replace")

    def close(self) -> None:
        """Stops following the job's events (it has ended, or nobody waits any more)."""
        try:
            self._link.call(self.unsubscribe(), CALL_TIMEOUT_S)
        except Exception as e:  # the subscription goes with the connection anyway
            log.debug("flare-launcher: job %s: unsubscribe: %s", self.job_id, bounded(e))
