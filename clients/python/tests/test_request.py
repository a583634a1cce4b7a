"""The parts of a LaunchRequest the launchers derive from NVFlare's data: job ids
a worker accepts, and a job's resource_spec in the protocol's terms."""

from __future__ import annotations

import re

import pytest

from nvflare.apis.job_def import JobMetaKey

from flare_launcher_nvflare.protocol import MAX_JOB_ID_LEN, job_id_for
from flare_launcher_nvflare.request import job_env, job_resources, launch_request

WORKER_JOB_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
NVFLARE_JOB_ID = "0b9bd0ad-5c1d-4bd1-a8a4-1d2f0e7c6f11"


@pytest.mark.parametrize(
    "site, expected",
    [
        ("site-1", f"site-1_{NVFLARE_JOB_ID}"),
        ("hospital a/b", f"hospital_a_b_{NVFLARE_JOB_ID}"),
        (".edge..site", f"_edge_.site_{NVFLARE_JOB_ID}"),
        ("a...b", f"a__.b_{NVFLARE_JOB_ID}"),
        ("", f"site_{NVFLARE_JOB_ID}"),
    ],
)
def test_job_ids_are_site_and_nvflare_job_id_in_the_workers_charset(site: str, expected: str) -> None:
    job_id = job_id_for(site, NVFLARE_JOB_ID)
    assert job_id == expected
    assert WORKER_JOB_ID.match(job_id) and ".." not in job_id


def test_a_long_site_name_is_cut_and_the_nvflare_job_id_kept() -> None:
    job_id = job_id_for("s" * 300, NVFLARE_JOB_ID)
    assert len(job_id) == MAX_JOB_ID_LEN
    assert job_id.endswith("_" + NVFLARE_JOB_ID)


def test_resource_spec_becomes_the_protocols_resources() -> None:
    meta = {
        "resource_spec": {
            "site-1": {"num_of_gpus": 2, "mem_per_gpu_in_GiB": 1.5, "num_of_cpus": 4, "memory": "8Gi"},
        }
    }
    assert job_resources(meta, "site-1") == {"gpus": 2, "gpu_memory_mb": 1536, "cpus": 4, "memory_mb": 8192}
    assert job_resources(meta, "site-2") is None


def test_every_request_carries_the_resources_and_only_a_container_one_an_image() -> None:
    common = dict(
        job_id="j",
        site="site-1",
        command=["python", "-m", "x"],
        env={},
        secret_env={},
        resources={"gpus": 1},
        start_timeout_s=120,
        labels={"nvflare-site": "site-1"},
    )
    container = launch_request(backend="k8s", image="img:1", **common)
    assert (container["image"], container["resources"]) == ("img:1", {"gpus": 1})
    assert "workdir" not in container
    process = launch_request(backend=None, image=None, **common)
    assert "image" not in process and "backend" not in process and "secret_env" not in process
    # A process worker with the gpu policy hands the job its GPUs from these.
    assert process["resources"] == {"gpus": 1}
    assert process["workdir"]
    assert "resources" not in launch_request(backend="process", image=None, **{**common, "resources": None})


def test_the_job_credentials_go_in_secret_env_and_nowhere_else(tmp_path, monkeypatch) -> None:
    from fake_site import AUTH_TOKEN, FakeSite

    site = FakeSite(tmp_path)
    meta, ctx = site.job("exit=0")
    # The site's own environment may hold a credential's name: it is not sent in env.
    monkeypatch.setenv("NVFLARE_JOB_AUTH_TOKEN", "the-sites-own")
    monkeypatch.setenv("NVFLARE_OTHER", "kept")
    env, secret_env = job_env(meta[JobMetaKey.JOB_ID.value], ctx, ("NVFLARE_*",))
    assert secret_env == {"NVFLARE_JOB_AUTH_TOKEN": AUTH_TOKEN}
    assert env["NVFLARE_OTHER"] == "kept"
    assert AUTH_TOKEN not in env.values() and "NVFLARE_JOB_AUTH_TOKEN" not in env
    request = launch_request(
        job_id="j", site="site-1", command=["x"], env=env, secret_env=secret_env, backend=None,
        image=None, resources=None, start_timeout_s=1, labels={},
    )
    assert request["secret_env"] == secret_env


def test_a_container_job_gets_its_secret_files_back_as_variables(tmp_path) -> None:
    import subprocess

    (tmp_path / "NVFLARE_JOB_AUTH_TOKEN").write_text("tok en")
    command = ["sh", "-c", 'printf "%s|%s" "$NVFLARE_JOB_AUTH_TOKEN" "$1"', "x", "arg 1"]
    request = launch_request(
        job_id="j", site="s", command=command, env={}, secret_env={"NVFLARE_JOB_AUTH_TOKEN": "tok en"},
        backend="docker", image="img", resources=None, start_timeout_s=1, labels={},
    )
    assert "tok en" not in " ".join(request["command"]), "the value is in no command line"
    ran = subprocess.run(request["command"], env={"FLARE_SECRETS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, check=True)
    assert ran.stdout == "tok en|arg 1"
    process = launch_request(
        job_id="j", site="s", command=command, env={}, secret_env={"T": "v"},
        backend=None, image=None, resources=None, start_timeout_s=1, labels={},
    )
    assert process["command"] == command, "a process job gets its secrets as variables already"
