"""An NVFlare site's workspace and the FLContext its engine hands a launcher, with a
job module in the app's custom dir standing in for NVFlare's job process.

The job module is found only through the PYTHONPATH the launcher sends, records
what it was given, and then does what the job's `--set` option says.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Optional

from nvflare.apis.fl_constant import FLContextKey, ReservedKey
from nvflare.apis.fl_context import FLContext
from nvflare.apis.job_def import JobMetaKey
from nvflare.apis.job_launcher_spec import JobProcessArgs
from nvflare.apis.workspace import Workspace

JOB_MODULE = '''
import json, os, signal, sys, time
args = sys.argv[1:]
behaviour = args[args.index("--set") + 1]
workspace, job = args[args.index("-m") + 1], args[args.index("-n") + 1]
with open(os.path.join(workspace, job + ".seen.json"), "w") as f:
    json.dump({"argv": args, "token": os.environ.get("NVFLARE_JOB_AUTH_TOKEN"), "cwd": os.getcwd(),
               "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}, f)
if behaviour.startswith("exit="):
    sys.exit(int(behaviour[len("exit="):]))
if behaviour.startswith("say="):
    for i in range(1, int(behaviour[len("say="):]) + 1):
        print(f"line {i}", flush=True)
    sys.exit(0)
if behaviour.startswith("until="):
    while not os.path.exists(behaviour[len("until="):]):
        time.sleep(0.05)
    sys.exit(0)
signal.pause()
'''

AUTH_TOKEN = "token-for-the-job"


class FakeSite:
    """Workspace `root/NAME` with the folders NVFlare insists on."""

    def __init__(self, root: Path, name: str = "site-1") -> None:
        self.name = name
        self.root = root / name
        (self.root / "startup").mkdir(parents=True)
        (self.root / "local").mkdir()
        self.workspace = Workspace(str(self.root), name)

    def job(self, behaviour: str, resource_spec: Optional[dict] = None) -> tuple[dict, FLContext]:
        """A new job's meta and context; `behaviour` is `exit=N`, `say=N` (N lines, then exit 0), `until=PATH` or `block`;
        `resource_spec` is this site's share of the job's resource spec."""
        job_id = str(uuid.uuid4())
        custom = Path(self.workspace.get_app_custom_dir(job_id))
        custom.mkdir(parents=True)
        (custom / "fake_job.py").write_text(JOB_MODULE)
        ctx = FLContext()
        ctx.set_prop(ReservedKey.IDENTITY_NAME, self.name, private=False, sticky=False)
        ctx.set_prop(FLContextKey.WORKSPACE_OBJECT, self.workspace, private=True, sticky=False)
        job_args = {
            JobProcessArgs.EXE_MODULE: ("-m", "fake_job"),
            JobProcessArgs.WORKSPACE: ("-m", str(self.root)),
            JobProcessArgs.JOB_ID: ("-n", job_id),
            JobProcessArgs.CLIENT_NAME: ("-c", self.name),
            JobProcessArgs.AUTH_TOKEN: ("-t", AUTH_TOKEN),
            JobProcessArgs.OPTIONS: ("--set", behaviour),
        }
        ctx.set_prop(FLContextKey.JOB_PROCESS_ARGS, job_args, private=True, sticky=False)
        meta = {JobMetaKey.JOB_ID.value: job_id}
        if resource_spec is not None:
            meta[JobMetaKey.RESOURCE_SPEC.value] = {self.name: resource_spec}
        return meta, ctx

    def seen(self, job_meta: dict) -> dict:
        """What the job process recorded of its arguments and environment."""
        return json.loads((self.root / f"{job_meta[JobMetaKey.JOB_ID.value]}.seen.json").read_text())
