"""The file worker: one thread decoding uploads beside the live engine, and a bounded line of jobs waiting for it.

Shared by the server (which cancels every job on shutdown and reports the line in /metrics and /healthz) and the
OpenAI file endpoints (api/openai.py, which turn a full line into their 429).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class JobsFull(Exception):
    """Every place in the line is taken: `active` jobs are decoding or waiting."""

    def __init__(self, active: int) -> None:
        super().__init__(f"{active} file jobs are decoding or waiting")
        self.active = active


class JobCancelled(Exception):
    """A file job was cancelled (the server is stopping, or the client went away)."""


class FileJobs:
    """The file worker: one thread decoding uploads beside the live engine, and a bounded line of jobs."""

    def __init__(self, max_jobs: int) -> None:
        self.max_jobs = max_jobs
        self.active = 0  # decoding or waiting
        self._executor: ThreadPoolExecutor | None = None
        self._cancels: set[threading.Event] = set()

    def admit(self) -> threading.Event:
        """A slot in the line (its cancel flag), or JobsFull."""
        if self.active >= self.max_jobs:
            raise JobsFull(self.active)
        self.active += 1
        cancel = threading.Event()
        self._cancels.add(cancel)
        return cancel

    def release(self, cancel: threading.Event) -> None:
        """Give the slot back (idempotent)."""
        if cancel in self._cancels:
            self.active -= 1
            self._cancels.discard(cancel)

    async def run(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="dragoman-files")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def cancel_all(self) -> None:
        for cancel in list(self._cancels):
            cancel.set()
