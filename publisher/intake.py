"""Inspect a batch of .debs on every core (``publish DIR|@LIST``, docs/cli.md).

Reading a control member is Python work (tar headers, the control paragraph) that
holds the GIL, so a large batch is inspected by worker processes, in chunks so that
the per-file cost of passing work and results stays small.  With
``limits.dpkg_check = "always"`` each file waits on a ``dpkg-deb`` process instead,
so threads overlap those waits.  Results come back in the order of ``paths``, and
the first failure in that order is the one raised.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from publisher.config import LimitsConfig
from publisher.debfile import DebInfo, inspect_deb

PROCESS_MIN = 512  # files before worker processes pay for their start-up (~0.2 s)
CHUNK = 256  # files per task sent to a worker process
MAX_WORKERS = 2
DPKG_THREADS = 4  # dpkg-deb processes in flight with dpkg_check = "always"
log = logging.getLogger("aptship")


def _inspect_chunk(paths: Sequence[str | Path], limits: LimitsConfig) -> list[DebInfo]:
    return [inspect_deb(p, limits) for p in paths]


def inspect_all(paths: Sequence[str | Path], limits: LimitsConfig) -> list[DebInfo]:
    """:func:`inspect_deb` of every path, in order."""
    if limits.dpkg_mode == "always" and len(paths) > 1:
        with ThreadPoolExecutor(max_workers=min(DPKG_THREADS, len(paths))) as pool:
            return list(pool.map(lambda p: inspect_deb(p, limits), paths))
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    if workers < 2 or len(paths) < PROCESS_MIN:
        return _inspect_chunk(paths, limits)
    import multiprocessing  # only for a batch big enough to use the worker processes
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    chunks = [paths[i : i + CHUNK] for i in range(0, len(paths), CHUNK)]
    # fork (no start-up: about 0.2 s less) only when this process has no other thread
    # that could hold a lock in the copy; with threads (a server, a test harness), spawn
    alone = threading.active_count() == 1
    context = multiprocessing.get_context("fork" if alone else "spawn")
    infos: list[DebInfo] = []
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            try:
                for part in pool.map(_inspect_chunk, chunks, [limits] * len(chunks)):
                    infos += part
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    except BrokenProcessPool as exc:  # a worker died (killed, out of memory): go on here
        log.warning("warning: intake worker failed (%s); inspecting in this process", exc)
        return _inspect_chunk(paths, limits)
    return infos
