"""The JobHandle NVFlare holds for a job that a flare-launcher worker runs.

`poll()` answers from the latest event without blocking; `wait()` blocks until the
terminal event; `terminate()` sends the terminate request, and a thread of the
handle sends it again until the job's terminal event. Events come from a
subscription to the job's event subject, and, so that none is missed while NATS was
away, the job's latest event is read back from the events stream after every
reconnection and whenever a while has passed without news.
"""

from __future__ import annotations

import json
import logging
import threading
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
from .replies import TerminateAnswer, Verdict, read_terminate_reply

log = logging.getLogger(__name__)

#: How long one NATS round trip from NVFlare's threads may take.
CALL_TIMEOUT_S = 5.0
#: Failures that pass when NATS is back or a worker answers: worth trying again.
TRANSIENT_NATS_ERRORS = (NatsTimeoutError, NoRespondersError, TimeoutError, ConnectionClosedError, OSError)
#: How long `terminate()` waits for the first answer before it returns.
FIRST_TRY_WAIT_S = 3.0
#: Pause before a terminate that was refused or not answered is sent again.
RETRY_S = 1.0
#: Time beyond the grace that an accepted terminate gets to end the job before it is sent again.
CONFIRM_MARGIN_S = 20.0
_NOTHING_BUT_THE_END: frozenset[str] = frozenset()


class FlareJobHandle(JobHandleSpec):
    """A job run by flare-launcher, seen through its events.

    `lost_nats_give_up_s`: how long `wait()` keeps trying while NATS cannot be
    reached before it returns without the job's end (with an error in the log),
    and how long a terminate is sent again before it is given up.
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
        self._terminating: Optional[threading.Thread] = None
        self._terminating_lock = threading.Lock()
        self._first_try = threading.Event()

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
        """The job's return code, JobReturnCode.UNKNOWN while it has not ended, or
        INFRASTRUCTURE_ERROR once `wait()` gave up on it (see JobEvents.return_code)."""
        return self.events.return_code()

    def wait(self) -> None:
        """Blocks until the job's terminal event, or until NATS has been out of reach
        for `lost_nats_give_up_s` seconds: then the job counts as failed
        (INFRASTRUCTURE_ERROR), so that NVFlare reports it."""
        if not self.await_states(_NOTHING_BUT_THE_END, deadline=None):
            self.events.give_up()
            log.error(
                "flare-launcher: job %s: gave up waiting for its end: NATS out of reach for %.0f s "
                "(reported as INFRASTRUCTURE_ERROR; the worker may still run it)",
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

    def terminate(self, heartbeat_cleanup: bool = False) -> None:
        """Asks the job's worker to stop it (SIGTERM, the kill after `grace_s`),
        and returns within FIRST_TRY_WAIT_S seconds: NVFlare calls it on its abort path.
        NVFlare 2.9's client executor passes `heartbeat_cleanup=True` on some of
        those paths (its server no longer knows the job): the job is stopped all
        the same.

        The first try is awaited that long, so a terminate sent before the launch
        reaches the workers first (they keep it, and the launch then starts
        nothing). A daemon thread goes on sending it until the job's terminal event,
        or for up to `lost_nats_give_up_s` seconds (see `send_terminate`).
        """
        with self._terminating_lock:
            if self._terminating is None or not self._terminating.is_alive():
                self._first_try.clear()
                self._terminating = threading.Thread(
                    target=self.send_terminate,
                    args=(self._give_up_s,),
                    name=f"terminate-{self.job_id}",
                    daemon=True,
                )
                self._terminating.start()
        self._first_try.wait(FIRST_TRY_WAIT_S)

    def send_terminate(self, tries_for_s: float) -> None:
        """Sends the terminate request until the job's terminal event, for up to
        `tries_for_s` seconds (0: one try). It is sent again at once (after
        RETRY_S) while it is refused for a reason that passes or nobody answers,
        and CONFIRM_MARGIN_S past the grace once a worker accepted it without the
        job ending. Every refusal is logged."""
        body = json.dumps({"grace_s": self._grace_s}).encode()
        give_up = time.monotonic() + tries_for_s
        answer: Optional[TerminateAnswer] = None
        while not self.events.terminal:
            answer = self._try_terminate(body)
            self._first_try.set()
            if answer is not None and answer.verdict is Verdict.FINAL:
                return
            now = time.monotonic()
            if now >= give_up:
                break
            pause = self._grace_s + CONFIRM_MARGIN_S if answer and answer.verdict is Verdict.ACCEPTED else RETRY_S
            self.await_states(_NOTHING_BUT_THE_END, deadline=min(now + pause, give_up))
        self._first_try.set()
        if not self.events.terminal and tries_for_s:
            log.error(
                "flare-launcher: job %s: terminate not confirmed within %.0f s (last answer: %s)",
                self.job_id,
                tries_for_s,
                answer.text if answer else "none",
            )

    def _try_terminate(self, body: bytes) -> Optional[TerminateAnswer]:
        """One terminate request; its answer, logged, or None when none came."""
        try:
            msg = self._link.run(lambda nc: self._request_terminate(nc, body), CALL_TIMEOUT_S + 1)
        except TRANSIENT_NATS_ERRORS as e:
            log.warning("flare-launcher: job %s: terminate not delivered: %s", self.job_id, bounded(e))
            return None
        answer = read_terminate_reply(msg.data, msg.headers)
        level = logging.INFO if answer.verdict is Verdict.ACCEPTED else logging.WARNING
        log.log(level, "flare-launcher: job %s: terminate %s: %s", self.job_id, answer.verdict.value, answer.text)
        return answer

    async def _request_terminate(self, nc: Client, body: bytes) -> Msg:
        return await nc.request(self._subjects.terminate(self.job_id), body, timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        """Stops following the job's events (it has ended, or nobody waits any more)."""
        try:
            self._link.call(self.unsubscribe(), CALL_TIMEOUT_S)
        except Exception as e:  # the subscription goes with the connection anyway
            log.debug("flare-launcher: job %s: unsubscribe: %s", self.job_id, bounded(e))
