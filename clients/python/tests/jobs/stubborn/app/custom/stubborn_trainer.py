"""A trainer that never finishes its task and keeps its job process alive after an
abort (a thread that does not end), so that only a kill from outside ends it.

When its task starts it leaves a file named SITE-JOB_ID in the directory that
NVFLARE_TEST_MARKER_DIR names, so that a test knows it is stuck.
"""

import os
import threading
import time
from pathlib import Path

from nvflare.apis.executor import Executor


def _forever() -> None:
    while True:
        time.sleep(1)


class StubbornTrainer(Executor):
    def execute(self, task_name, shareable, fl_ctx, abort_signal):
        threading.Thread(target=_forever, name="stubborn", daemon=False).start()
        marker = Path(os.environ["NVFLARE_TEST_MARKER_DIR"]) / f"{fl_ctx.get_identity_name()}-{fl_ctx.get_job_id()}"
        marker.touch()
        _forever()
