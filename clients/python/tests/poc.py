"""A real NVFlare POC (one server, two clients) whose sites launch their jobs through
flare-launcher: `nvflare poc prepare`, every site's `process_launcher` component
replaced by this package's launcher (and the class on the site's allow list),
`nvflare poc start`, and an admin session of NVFlare's own API to submit jobs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from harness import REPO, READY_TIMEOUT_S
from nvflare.fuel.flare_api.flare_api import Session, new_secure_session

ADMIN = "admin@nvidia.com"
CLIENTS = ("site-1", "site-2")
SITES = ("server",) + CLIENTS
LAUNCHERS = {
    "server": "flare_launcher_nvflare.ServerJobLauncher",
    "site-1": "flare_launcher_nvflare.ClientJobLauncher",
    "site-2": "flare_launcher_nvflare.ClientJobLauncher",
}
#: Classes of the test jobs' own code, allowed on the clients.
JOB_CLASSES = ["stubborn_trainer.StubbornTrainer"]


class Poc:
    """A prepared POC workspace under `root`; `start()` runs its sites."""

    def __init__(self, root: Path, nats_url: str) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.env["NVFLARE_POC_WORKSPACE"] = str(root / "poc")
        # The sites run with this venv's python3 and find the launchers' package.
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        src = str(REPO / "clients" / "python" / "src")
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (src, self.env.get("PYTHONPATH")) if p)
        self.nvflare(["poc", "prepare", "-n", str(len(CLIENTS)), "--force"])
        self.kits = root / "poc" / "example_project" / "prod_00"
        for site in SITES:
            self._use_flare_launcher(site, nats_url)
        self.session: Optional[Session] = None

    def nvflare(self, args: list[str]) -> str:
        out = subprocess.run(
            [str(Path(sys.executable).parent / "nvflare"), *args],
            env=self.env,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise AssertionError(f"nvflare {' '.join(args)}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def _use_flare_launcher(self, site: str, nats_url: str) -> None:
        """Writes the site's local/resources.json: NVFlare's default with its
        `process_launcher` replaced by flare-launcher's, and that class allowed."""
        local = self.kits / site / "local"
        resources = json.loads((local / "resources.json.default").read_text())
        launcher = LAUNCHERS[site]
        replaced = 0
        for component in resources["components"]:
            if component["id"] == "process_launcher":
                component["path"] = launcher
                component["args"] = {"nats_url": nats_url}
                replaced += 1
        assert replaced == 1, f"{site}: no process_launcher component to replace"
        allow = resources.setdefault("class_allow_list", [])
        allow.append(launcher)
        if site != "server":
            allow.extend(JOB_CLASSES)
        (local / "resources.json").write_text(json.dumps(resources, indent=2))

    def start(self) -> Session:
        self.nvflare(["poc", "start", "-ex", ADMIN])
        deadline = time.monotonic() + READY_TIMEOUT_S * 3
        while True:
            try:
                session = new_secure_session(ADMIN, str(self.kits / ADMIN), timeout=10)
                clients = session.get_system_info().client_info
                if len(clients) == len(CLIENTS):
                    self.session = session
                    return session
                session.close()
            except Exception as e:  # the server is still starting; the clients still registering
                if time.monotonic() > deadline:
                    raise AssertionError(f"the POC did not come up: {e}\n{self.logs()}") from e
            if time.monotonic() > deadline:
                raise AssertionError(f"the clients did not register\n{self.logs()}")
            time.sleep(1)

    def stop(self) -> None:
        if self.session is not None:
            self.session.close()
        try:
            self.nvflare(["poc", "stop"])
        except AssertionError as e:
            print(e)

    def logs(self) -> str:
        """The tail of every site's log, for failure messages."""
        parts = []
        for site in SITES:
            log = self.kits / site / "log.txt"
            if log.exists():
                parts.append(f"--- {site}\n" + "".join(log.read_text(errors="replace").splitlines(True)[-40:]))
        return "\n".join(parts)
