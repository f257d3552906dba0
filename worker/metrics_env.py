"""Switch prometheus_client to multiprocess mode before it is imported.

prometheus_client 0.26 picks its value storage once, when ``prometheus_client.values`` is
first imported: with ``PROMETHEUS_MULTIPROC_DIR`` in the environment every metric value
lives in a per-process ``*.db`` file in that folder, otherwise in process memory. Prefork
pool children inherit the parent's choice through ``fork``, so the variable has to be set in
the parent before :mod:`worker.metrics` imports prometheus_client. This module therefore
imports nothing from prometheus_client.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from worker.settings import get_settings

logger = logging.getLogger(__name__)

PROMETHEUS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"

# prometheus_client names its files "<type>_<pid>.db" and "gauge_<mode>_<pid>.db".
PID_FILE_PATTERN = re.compile(r"^(?P<prefix>[a-z]+(?:_[a-z]+)?)_(?P<pid>[0-9]+)\.db$")


def configure_multiprocess_dir() -> Path | None:
    """Export ``PROMETHEUS_MULTIPROC_DIR`` from ``CARGOSCAN_METRICS_MULTIPROC_DIR``; returns the folder or None.

    An existing ``PROMETHEUS_MULTIPROC_DIR`` wins. The folder is created when missing. Files
    named with this process's id are removed, because they come from an earlier process with
    the same id (common for a container's main process) and prometheus_client would
    otherwise continue counting from their values.
    """
    configured = os.environ.get(PROMETHEUS_DIR_VARIABLE) or get_settings().metrics_multiproc_dir
    if not configured:
        return None

    folder = Path(configured)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        if values.ValueClass._multiprocess:
            return folder
        logger.error(
            "prometheus_client was imported before %s could be set, so metrics stay in process memory; "
            "set %s in the worker's environment instead", PROMETHEUS_DIR_VARIABLE, PROMETHEUS_DIR_VARIABLE,
        )
        return None

    folder.mkdir(parents=True, exist_ok=True)
    remove_files_of_pid(folder, os.getpid())
    os.environ[PROMETHEUS_DIR_VARIABLE] = str(folder)
    return folder


def remove_files_of_pid(folder: Path, pid: int) -> None:
    """Delete the metric files that prometheus_client wrote for process ``pid``."""
    for path in folder.glob(f"*_{pid}.db"):
        match = PID_FILE_PATTERN.match(path.name)
        if match and int(match["pid"]) == pid:
            path.unlink(missing_ok=True)
