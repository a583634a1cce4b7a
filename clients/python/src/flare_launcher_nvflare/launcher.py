"""NVFlare job launchers that hand each job to flare-launcher workers over NATS.

A site switches to them by replacing its `process_launcher` component in
`local/resources.json`. On BEFORE_JOB_LAUNCH the launcher offers itself, as
NVFlare's own launchers do; `launch_job` publishes the LaunchRequest, waits until
a worker runs the job (raising if it could not be started), and returns a handle.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import threading
import time
import weakref
from abc import abstractmethod
from typing import Optional, Union

from nats.aio.client import Client
from nats.js.api import PubAck
from nats.js.errors import NoStreamResponseError
from nvflare.apis.event_type import EventType
from nvflare.apis.fl_constant import JobConstants
from nvflare.apis.fl_context import FLContext
from nvflare.apis.job_launcher_spec import JobLauncherSpec, add_launcher
from nvflare.utils.job_launcher_utils import generate_client_command, generate_server_command

from . import output
from .connection import ConnectOptions, NatsLink
from .handle import CALL_TIMEOUT_S, TRANSIENT_NATS_ERRORS, FlareJobHandle
from .output import Output
from .protocol import DEFAULT_POOL, DEFAULT_PREFIX, Subjects, bounded, job_id_for
from .request import CONTAINER_BACKENDS, DEFAULT_PASS_ENV, job_env, job_resources, launch_request

log = logging.getLogger(__name__)

_SUBJECT_TOKENS = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_BACKENDS = frozenset({"process"}) | CONTAINER_BACKENDS
#: Time beyond `start_timeout` that `launch_job` gives the worker to report the job's start or its failure.
START_MARGIN_S = 10


class JobLaunchError(RuntimeError):
    """The job could not be started: its worker reported `error`, or no worker took it in time."""


class FlareJobLauncher(JobLauncherSpec):
    """Sends jobs to flare-launcher workers; one NATS connection for all its jobs.

    Args:
        nats_url: NATS server URL, or several, comma-separated (or a list).
        nats_user, nats_password, nats_token, nats_credentials_file,
        nats_nkey_seed_file: how to authenticate (as for the worker).
        nats_tls_ca, nats_tls_cert, nats_tls_key: CA to trust; client certificate.
        subject_prefix: the workers' subject prefix.
        pool: the worker pool that runs this site's jobs.
        backend: `process`, `docker` or `k8s`; None leaves it to the worker.
        image: the container image, for the docker and k8s backends.
        start_timeout: seconds a job may take from its request to running.
        terminate_grace: seconds a job gets between SIGTERM and the kill.
        nats_give_up: seconds `wait()` keeps trying while NATS cannot be
            reached, and `terminate()` (in the background) until the job ends.
        pass_env: variables of this process's environment that jobs get (names, or
            prefixes ending in `*`); NVFlare's own (`NVFL_*`, `NVFLARE_*`) by default.
    """

    def __init__(
        self,
        nats_url: Union[str, list] = "nats://127.0.0.1:4222",
        nats_user: Optional[str] = None,
        nats_password: Optional[str] = None,
        nats_token: Optional[str] = None,
        nats_credentials_file: Optional[str] = None,
        nats_nkey_seed_file: Optional[str] = None,
        nats_tls_ca: Optional[str] = None,
        nats_tls_cert: Optional[str] = None,
        nats_tls_key: Optional[str] = None,
        subject_prefix: str = DEFAULT_PREFIX,
        pool: str = DEFAULT_POOL,
        backend: Optional[str] = None,
        image: Optional[str] = None,
        start_timeout: int = 120,
        terminate_grace: int = 10,
        nats_give_up: float = 300,
        pass_env: Optional[list] = None,
    ) -> None:
        super().__init__()
        if not _SUBJECT_TOKENS.match(subject_prefix):
            raise ValueError(f"subject_prefix {subject_prefix!r} is not a NATS subject")
        if not _SUBJECT_TOKENS.match(pool) or "." in pool:
            raise ValueError(f"pool {pool!r} must be one subject token (A-Z a-z 0-9 _ -)")
        if backend is not None and backend not in _BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of {sorted(_BACKENDS)}")
        if backend in CONTAINER_BACKENDS and not image:
            raise ValueError(f"backend {backend!r} needs an image")
        self._options = ConnectOptions(
            servers=ConnectOptions.parse_servers(nats_url),
            user=nats_user,
            password=nats_password,
            token=nats_token,
            credentials_file=nats_credentials_file,
            nkey_seed_file=nats_nkey_seed_file,
            tls_ca=nats_tls_ca,
            tls_cert=nats_tls_cert,
            tls_key=nats_tls_key,
        )
        self._subjects = Subjects(subject_prefix)
        self._pool = pool
        self._backend = backend
        self._image = image
        self._start_timeout = int(start_timeout)
        self._grace = int(terminate_grace)
        self._give_up = float(nats_give_up)
        self._pass_env = tuple(DEFAULT_PASS_ENV if pass_env is None else pass_env)
        self._link: Optional[NatsLink] = None
        self._link_lock = threading.Lock()
        self._live: "weakref.WeakSet[FlareJobHandle]" = weakref.WeakSet()
        self._live_lock = threading.Lock()

    def handle_event(self, event_type: str, fl_ctx: FLContext) -> None:
        if event_type == EventType.BEFORE_JOB_LAUNCH:
            add_launcher(self, fl_ctx)
        elif event_type == EventType.SYSTEM_END:
            self.close()

    def close(self) -> None:
        """Closes the NATS connection (at NVFlare's SYSTEM_END); a later launch opens a new one."""
        with self._link_lock:
            link, self._link = self._link, None
        if link is not None:
            link.close()

    @abstractmethod
    def get_command(self, job_meta: dict, fl_ctx: FLContext) -> str:
        """The job process's command line, as NVFlare builds it for this side of a site."""

    def launch_job(self, job_meta: dict, fl_ctx: FLContext) -> FlareJobHandle:
        nvflare_job_id = job_meta.get(JobConstants.JOB_ID)
        site = fl_ctx.get_identity_name()
        env, secret_env = job_env(nvflare_job_id, fl_ctx, self._pass_env)
        request = launch_request(
            job_id=job_id_for(site, nvflare_job_id),
            site=site,
            command=shlex.split(self.get_command(job_meta, fl_ctx), True),
            env=env,
            secret_env=secret_env,
            backend=self._backend,
            image=self._image,
            resources=job_resources(job_meta, site),
            start_timeout_s=self._start_timeout,
            labels={"nvflare-job-id": nvflare_job_id, "nvflare-site": site},
        )
        return self.submit(request)

    def submit(self, request: dict) -> FlareJobHandle:
        """Publishes `request` and returns its handle once a worker runs the job.

        Raises JobLaunchError when the job ends in `error` (its reason and message
        say why) or when no worker reports its start within `start_timeout` plus a
        margin; then the request is taken back (see `_withdraw`), so it never
        starts. A job that ends otherwise before it was seen running (an abort
        that came first) is returned, its handle holding the end.
        """
        job_id = request["job_id"]
        link, handle = self._track(job_id)
        deadline = time.monotonic() + self._start_timeout + START_MARGIN_S
        try:
            ack = self._publish(link, request, deadline)
        except JobLaunchError:
            handle.close()
            raise
        if not handle.await_states(frozenset({"running"}), deadline):
            self._withdraw(link, ack, handle)
            raise JobLaunchError(
                f"job {job_id}: no flare-launcher worker of pool {self._pool!r} reported its start "
                f"within {self._start_timeout + START_MARGIN_S} s"
            )
        if handle.events.state == "error":
            handle.close()
            raise JobLaunchError(f"job {job_id} could not be started: {handle.events.message}")
        log.info("flare-launcher: job %s: %s", job_id, handle.events.state)
        return handle

    def follow(self, job_id: str) -> FlareJobHandle:
        """A handle on a job launched earlier (by this or another launcher), which
        knows the job's latest event as soon as NATS answers."""
        _, handle = self._track(job_id)
        handle.resync()
        return handle

    def fetch_output(self, job_id: str, limit: int = 1024 * 1024, from_end: bool = True) -> Output:
        """Up to `limit` bytes of a job's output, its last by default (for an admin
        command showing a job's log), from whichever worker runs or ran it, for as
        long as the workers keep the job's log. `job_id` is flare-launcher's
        (`FlareJobHandle.job_id`). Raises `OutputUnavailable` for an unknown job
        or when no worker answers for it."""
        link = self._connection()
        return link.run(
            lambda nc: output.fetch(nc, self._subjects, job_id, limit, from_end, CALL_TIMEOUT_S),
            CALL_TIMEOUT_S * (output.OWNER_TRIES + 2),
        )

    def _track(self, job_id: str) -> tuple[NatsLink, FlareJobHandle]:
        """A handle subscribed to the job's events, replayed after reconnections."""
        link = self._connection()
        handle = FlareJobHandle(link, self._subjects, job_id, self._grace, self._give_up)
        link.run(handle.subscribe, CALL_TIMEOUT_S)
        with self._live_lock:
            self._live.add(handle)
        return link, handle

    def _withdraw(self, link: NatsLink, ack: PubAck, handle: FlareJobHandle) -> None:
        """Makes sure a job given up on never starts: its request is deleted from the
        work queue, and a terminate goes out too, for a worker that may have taken
        the request already. Only when the request could not be deleted (a worker
        recorded it) is the terminate tried for as long as for any job."""
        try:
            deleted = link.run(lambda nc: nc.jsm().delete_msg(ack.stream, ack.seq), CALL_TIMEOUT_S + 1)
        except Exception as e:  # taken by a worker already (or NATS away): the terminate covers it
            log.info("flare-launcher: job %s: request not withdrawn from the queue: %s", handle.job_id, bounded(e))
            deleted = False
        handle.send_terminate(tries_for_s=0 if deleted else self._give_up)
        handle.close()

    def _publish(self, link: NatsLink, request: dict, deadline: float) -> PubAck:
        """Publishes the request into the jobs stream, retrying while NATS or the
        stream (which workers create) is not there."""
        subject = self._subjects.launch(self._pool)
        payload = json.dumps(request).encode()
        headers = {"Nats-Msg-Id": request["job_id"]}

        async def publish(nc: Client) -> PubAck:
            return await nc.jetstream().publish(subject, payload, timeout=CALL_TIMEOUT_S, headers=headers)

        while True:
            try:
                return link.run(publish, CALL_TIMEOUT_S + 1)
            except (TRANSIENT_NATS_ERRORS + (NoStreamResponseError,)) as e:
                if time.monotonic() >= deadline:
                    raise JobLaunchError(f"job {request['job_id']}: launch request not published: {bounded(e)}") from e
                log.warning("flare-launcher: job %s: publishing again: %s", request["job_id"], bounded(e))
                time.sleep(1)

    def _connection(self) -> NatsLink:
        with self._link_lock:
            if self._link is None:
                self._link = NatsLink(self._options, name=f"nvflare-{type(self).__name__}")
                self._link.on_reconnect(self._replay_live)
            return self._link

    async def _replay_live(self, nc: Client) -> None:
        """After a reconnection: reads back the latest event of every job not yet ended."""
        with self._live_lock:
            handles = [h for h in self._live if not h.events.terminal]
        for h in handles:
            try:
                await h.replay(nc)
            except Exception as e:  # a later resync of the handle tries again
                log.warning("flare-launcher: job %s: replay after reconnecting: %s", h.job_id, bounded(e))


class ClientJobLauncher(FlareJobLauncher):
    """For a client site: the job command NVFlare's ClientProcessJobLauncher would run."""

    def get_command(self, job_meta: dict, fl_ctx: FLContext) -> str:
        return generate_client_command(fl_ctx)


class ServerJobLauncher(FlareJobLauncher):
    """For the server: the job command NVFlare's ServerProcessJobLauncher would run."""

    def get_command(self, job_meta: dict, fl_ctx: FLContext) -> str:
        return generate_server_command(fl_ctx)
