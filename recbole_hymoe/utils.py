"""Small helpers shared by runs, benchmarks and sweeps: atomic writes, peak memory, folder names,
the Ray connection."""

import os
import re
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path`` that replaces ``path`` in one step once written.

    A reader (or an interrupted writer) never sees half a file: ``path`` holds the old content
    until the replacement.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    yield tmp
    os.replace(tmp, path)


def write_atomic(path, text):
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class PeakRSS:
    """Sample this process's resident memory in a background thread; keep the maximum (bytes).

    Use as a context manager: ``peak`` holds the maximum seen between entering and leaving.
    """

    def __init__(self, interval=0.005):
        self.interval = interval
        self.peak = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self):
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def slug(text):
    """Folder name for a label: runs of anything but letters and digits become one ``-``, lower case."""
    return re.sub(r"[^A-Za-z0-9]+", "-", str(text)).strip("-").lower()


def init_ray(address=None, num_cpus=None):
    """Connect to Ray once per process: ``address`` (else ``RAY_ADDRESS``), else a local Ray with
    ``num_cpus`` CPUs (default: all)."""
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, include_dashboard=False)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
