"""Building a LaunchRequest for one site's process of an NVFlare job.

The command and the environment come from NVFlare's own builders (the ones its
ClientProcessJobLauncher and ServerProcessJobLauncher use), so a job runs under
flare-launcher exactly as it would have run as NVFlare's child process.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from nvflare.apis.fl_constant import FLContextKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.workspace import Workspace
from nvflare.utils.job_launcher_utils import (
    add_custom_dir_to_path,
    get_credential_env,
    get_portable_resource_spec,
    portable_memory_to_mib,
    resolve_site_resource_spec,
)

from .protocol import PROTOCOL_VERSION

#: Backends that run a container image rather than a local process.
CONTAINER_BACKENDS = frozenset({"docker", "k8s"})
#: Label values are cut to this length (Kubernetes' limit for label values).
MAX_LABEL_LEN = 63


#: Variables of this process's environment a job gets unless told otherwise:
#: NVFlare's own settings (result, log and audit roots and the like).
DEFAULT_PASS_ENV = ("NVFL_*", "NVFLARE_*")


def passed_env(patterns: Sequence[str]) -> dict[str, str]:
    """The variables of this process's environment named by `patterns` (names, or
    prefixes ending in `*`)."""
    exact = {p for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return {k: v for k, v in os.environ.items() if k in exact or (prefixes and k.startswith(prefixes))}


def job_env(nvflare_job_id: str, fl_ctx: FLContext, pass_env: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """The job's environment as the request's `env` and `secret_env`: in `env`,
    the variables `pass_env` names and, as NVFlare sets it for its own job
    processes, PYTHONPATH with the app's custom dir added; in `secret_env`,
    NVFlare's job credentials (its auth token, token signature and SSID), whose
    values no worker shows in a record, an event, a log line or a container's
    configuration. A credential's name is never also in `env`.

    Nothing else of this process's environment is sent: the worker's own
    environment is the base a job starts from.
    """
    secret_env = get_credential_env(fl_ctx.get_prop(FLContextKey.JOB_PROCESS_ARGS) or {})
    env = {k: v for k, v in passed_env(pass_env).items() if k not in secret_env}
    workspace: Optional[Workspace] = fl_ctx.get_prop(FLContextKey.WORKSPACE_OBJECT)
    if workspace is not None:
        custom_dir = workspace.get_app_custom_dir(nvflare_job_id)
        if custom_dir != "":
            add_custom_dir_to_path(custom_dir, env)
    return env, secret_env


#: A shell line that sets a variable per file of `$FLARE_SECRETS_DIR`, where a
#: Docker worker puts a job's `secret_env` (one file per variable, named after
#: it), then runs its arguments: NVFlare's job process reads its credentials
#: from its environment. Without the folder it only runs them.
SECRETS_AS_VARIABLES = (
    'if [ -n "$FLARE_SECRETS_DIR" ]; then for f in "$FLARE_SECRETS_DIR"/*; do '
    '[ -f "$f" ] && export "${f##*/}=$(cat "$f")"; done; fi; exec "$@"'
)


def job_command(command: list[str], backend: Optional[str], secret_env: dict[str, str]) -> list[str]:
    """The request's argv: `command`, run through `sh` with
    SECRETS_AS_VARIABLES when a container job has secrets (the image needs a
    shell, as NVFlare's images have)."""
    if backend in CONTAINER_BACKENDS and secret_env:
        return ["sh", "-c", SECRETS_AS_VARIABLES, "flare-secrets", *command]
    return command


def job_resources(job_meta: dict, site: str) -> Optional[dict]:
    """The site's share of the job's `resource_spec` in the protocol's terms
    (`gpus`, `gpu_memory_mb`, `cpus`, `memory_mb`), or None when it asks for nothing."""
    portable = get_portable_resource_spec(job_meta, site)
    resolved = resolve_site_resource_spec(job_meta, site)
    resources: dict = {}
    if "num_of_gpus" in portable:
        resources["gpus"] = portable["num_of_gpus"]
    mem_per_gpu = resolved.get("mem_per_gpu_in_GiB")
    if isinstance(mem_per_gpu, (int, float)) and not isinstance(mem_per_gpu, bool) and mem_per_gpu > 0:
        resources["gpu_memory_mb"] = int(mem_per_gpu * 1024)
    if "num_of_cpus" in portable:
        resources["cpus"] = portable["num_of_cpus"]
    if "memory" in portable:
        resources["memory_mb"] = portable_memory_to_mib(portable["memory"])
    return resources or None


def launch_request(
    *,
    job_id: str,
    site: str,
    command: list[str],
    env: dict[str, str],
    secret_env: dict[str, str],
    backend: Optional[str],
    image: Optional[str],
    resources: Optional[dict],
    start_timeout_s: int,
    labels: dict[str, str],
) -> dict:
    """The LaunchRequest as a JSON-ready dict, with the job's resources for every
    backend (a process worker with the `gpu` policy gives the job its GPUs from
    them). A process job starts in this process's working directory, as NVFlare's
    own child processes do; a container job gets its image (and the image's
    working directory). `secret_env` is sent only when there is one."""
    request: dict = {
        "v": PROTOCOL_VERSION,
        "job_id": job_id,
        "site": site,
        "command": job_command(command, backend, secret_env),
        "env": env,
        "timeouts": {"start_s": start_timeout_s},
        "labels": {k: v[:MAX_LABEL_LEN] for k, v in labels.items()},
    }
    if secret_env:
        request["secret_env"] = secret_env
    if backend is not None:
        request["backend"] = backend
    if resources:
        request["resources"] = resources
    if backend in CONTAINER_BACKENDS:
        request["image"] = image
    else:
        request["workdir"] = os.getcwd()
    return request
