"""The parts of the flare-launcher wire protocol (docs/protocol.md) the launchers use.

Subject, stream and job-id rules live here once, so the launchers and the handle
agree with the workers on every name.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = 1
DEFAULT_PREFIX = "flare.jobs"
DEFAULT_POOL = "default"

#: States after which a job has no further events; the event carries `return_code`.
TERMINAL_STATES = frozenset({"succeeded", "failed", "terminated", "error", "lost"})
#: The longest job id a worker accepts.
MAX_JOB_ID_LEN = 128
#: Longest piece of worker-sent text written into one of our log lines.
MAX_LOGGED_TEXT = 512

_NOT_JOB_ID_CHAR = re.compile(r"[^A-Za-z0-9._-]")
_NOT_NAME_CHAR = re.compile(r"[^A-Za-z0-9-]")


class Subjects:
    """Subject and stream names under one subject prefix, as the workers derive them."""

    def __init__(self, prefix: str = DEFAULT_PREFIX) -> None:
        self.prefix = prefix

    def launch(self, pool: str) -> str:
        return f"{self.prefix}.launch.{pool}"

    def terminate(self, job_id: str) -> str:
        return f"{self.prefix}.terminate.{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}.events.{job_id}"

    def status(self, job_id: str) -> str:
        return f"{self.prefix}.status.{job_id}"

    def worker_logs(self, worker: str) -> str:
        """Where `worker` answers for the output of the jobs it owns."""
        return f"{self.prefix}.worker.{worker}.logs"

    def events_stream(self) -> str:
        """`FLARE_JOB_EVENTS`, or that name with the prefix appended for any other prefix."""
        if self.prefix == DEFAULT_PREFIX:
            return "FLARE_JOB_EVENTS"
        return "FLARE_JOB_EVENTS_" + _NOT_NAME_CHAR.sub("_", self.prefix).upper()


def job_id_for(site: str, nvflare_job_id: str) -> str:
    """The flare-launcher job id of one site's process of an NVFlare job.

    NVFlare gives the server and every client the same job id, so the site name
    goes in front. Characters a job id cannot hold become `_`, and a site name
    too long for the 128-character limit is cut, never the NVFlare job id; dots
    at the ends or doubled (which NATS subjects refuse) become `_` as well.
    """
    job = _NOT_JOB_ID_CHAR.sub("_", nvflare_job_id)
    room = max(MAX_JOB_ID_LEN - len(job) - 1, 1)
    site_part = _NOT_JOB_ID_CHAR.sub("_", site)[:room] or "site"
    joined = f"{site_part}_{job}"[:MAX_JOB_ID_LEN]
    while ".." in joined:
        joined = joined.replace("..", "_.")
    if joined.startswith("."):
        joined = "_" + joined[1:]
    if joined.endswith("."):
        joined = joined[:-1] + "_"
    return joined


def bounded(text: object, limit: int = MAX_LOGGED_TEXT) -> str:
    """`text` cut to `limit` characters with a marker, and with control characters
    escaped, so that text received from NATS cannot flood or forge log lines."""
    s = str(text)
    cut = len(s) - limit
    if cut > 0:
        s = s[:limit] + f"… ({cut} characters cut)"
    return s.encode("unicode_escape", errors="backslashreplace").decode("ascii") if not s.isprintable() else s
