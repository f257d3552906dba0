"""A Celery worker whose decoder misbehaves on chosen files, for failure tests.

Run as ``python -m tests.worker.crashing_worker worker ...`` with the usual Celery worker
arguments. A scan whose file name starts with ``poison`` ends the process at once with
exit status 137, as the kernel's out-of-memory killer would; one starting with ``slow``
sleeps ``CARGOSCAN_TEST_SLOW_S`` seconds first, so a test can kill a worker mid-batch.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import models.inference


def _install_hooks() -> None:
    real_load_scan = models.inference.load_scan

    def misbehaving_load_scan(path, *args, **kwargs):
        name = Path(path).name
        if name.startswith("poison"):
            os._exit(137)
        if name.startswith("slow"):
            time.sleep(float(os.environ.get("CARGOSCAN_TEST_SLOW_S", "30")))
        return real_load_scan(path, *args, **kwargs)

    models.inference.load_scan = misbehaving_load_scan


if __name__ == "__main__":
    _install_hooks()
    from celery.bin.celery import main

    sys.argv = ["celery", "-A", "worker", *sys.argv[1:]]
    sys.exit(main())
