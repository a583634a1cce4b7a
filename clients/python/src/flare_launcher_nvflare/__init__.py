"""NVIDIA FLARE job launchers that run each job through flare-launcher workers.

Replace a site's `process_launcher` component in `local/resources.json` with
`flare_launcher_nvflare.ClientJobLauncher` (clients) or
`flare_launcher_nvflare.ServerJobLauncher` (the server).
"""

from .connection import NatsUnreachable
from .handle import FlareJobHandle
from .launcher import ClientJobLauncher, FlareJobLauncher, JobLaunchError, ServerJobLauncher
from .output import Output, OutputUnavailable

__all__ = [
    "ClientJobLauncher",
    "FlareJobHandle",
    "FlareJobLauncher",
    "JobLaunchError",
    "NatsUnreachable",
    "Output",
    "OutputUnavailable",
    "ServerJobLauncher",
]
