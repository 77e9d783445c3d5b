"""How the per-module solvers use a CPU's cores: modules side by side, one thread pool at a time.

A merge of N adapters is one small, independent problem per adapted module
(SmolLM2: 120 modules, stacked factors ``(N r, d)`` of 320 x 576). torch
splits each product over its OpenMP threads, and scipy's eigensolver and
numpy bring OpenBLAS pools of their own. On small products the splitting
costs more than it gains, and two pools that spin on the same cores wait for
each other: on this project's 2-core machine, the default thread setting made
``hydralib merge --heads 1`` several times slower than one thread.

:func:`map_modules` runs ``fn`` over the modules the way that keeps every
core busy without oversubscribing:

* on the CPU with ``torch.get_num_threads() = n > 1`` and at least ``n``
  modules: ``n`` Python worker threads each solve whole modules, every torch
  op runs on one thread (``torch.set_num_threads(1)`` for the duration,
  restored afterwards), and torch releases the GIL inside its ops, so the
  modules run in parallel;
* with fewer modules than threads (one huge module): one module at a time,
  with all ``n`` intra-op threads on its large products;
* always: the OpenBLAS pools that numpy and scipy load are capped at one
  thread (``threadpoolctl``), so that no second pool spins on the cores;
* on CUDA, or with one thread: the plain loop.

At most ``WINDOW_PER_WORKER x workers`` modules are in flight (solving, or
solved and waiting for the caller): a caller that writes each result out as it
comes (a streamed bundle of an 8B model) holds a few modules' results, not all.

Results come back in the modules' order. Side by side, each module is computed
exactly as in a one-thread run (the same ops on one thread), so the output does
not depend on the thread setting; one module at a time with several intra-op
threads may differ from it in the last bits (torch's reductions split by
thread). The intra-op setting is process-wide: other Python threads of the
caller run on one thread while a map is running.

Example
-------
>>> import torch
>>> squares = dict(map_modules(lambda m: m * m, [1, 2, 3], device=torch.device("cpu")))
>>> squares
{1: 1, 2: 4, 3: 9}
"""

from __future__ import annotations

import collections
import contextlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

import torch

__all__ = ["map_modules", "single_blas_thread", "plan", "WINDOW_PER_WORKER"]

#: modules in flight per worker (solving or solved, not yet yielded): bounds the memory of results ahead
WINDOW_PER_WORKER = 2

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Cap the BLAS pools loaded in this process (numpy's and scipy's OpenBLAS) at one thread, then restore."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield


def plan(n_modules: int, device: torch.device | str | None = None, threads: int | None = None) -> tuple[int, int]:
    """``(workers, intra-op threads)`` that :func:`map_modules` uses for ``n_modules`` modules on ``device``.

    ``threads`` defaults to ``torch.get_num_threads()``; CUDA and one thread give ``(1, threads)``.
    """
    threads = int(threads or torch.get_num_threads())
    if torch.device(device or "cpu").type != "cpu" or threads <= 1:
        return 1, threads
    if n_modules >= threads:
        return threads, 1
    return 1, threads


def map_modules(fn: Callable[[T], R], modules: Sequence[T], *, device: torch.device | str | None = None,
                progress: Callable[[], None] | None = None, parallel: bool = True) -> Iterator[tuple[T, R]]:
    """Yield ``(module, fn(module))`` for every module, in order, spread over the cores (see the module docstring).

    ``fn`` must not depend on other modules' results (each module is its own problem). ``progress``
    is called once per finished module (e.g. a tqdm bar's ``update``). ``parallel=False``: one module at a
    time (for ``fn`` that touch process-wide state, such as torch's global RNG), BLAS still capped.
    """
    modules = list(modules)
    workers, intra = plan(len(modules), device) if parallel else (1, torch.get_num_threads())
    tick = progress or (lambda: None)
    with single_blas_thread():
        if workers == 1:
            for module in modules:
                out = fn(module)
                tick()
                yield module, out
            return
        before = torch.get_num_threads()
        torch.set_num_threads(intra)
        try:
            # each worker sets its own threads first: torch's OpenMP setting reaches a new thread at its first
            # parallel op, but a first op that goes straight to MKL (an SVD) would run with MKL's default
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hydralib-module",
                                    initializer=torch.set_num_threads, initargs=(intra,)) as pool:
                # a bounded window: at most ``window`` modules solved or queued ahead of the one the caller
                # consumes, so results that the caller writes out (a streamed bundle) never pile up in memory
                window = WINDOW_PER_WORKER * workers
                pending: collections.deque = collections.deque()
                upcoming = iter(modules)
                try:
                    for module in itertools.islice(upcoming, window):
                        pending.append((module, pool.submit(fn, module)))
                    while pending:
                        module, future = pending.popleft()
                        out = future.result()
                        for nxt in itertools.islice(upcoming, 1):
                            pending.append((nxt, pool.submit(fn, nxt)))
                        tick()
                        yield module, out
                        del out
                finally:  # an error or an abandoned generator: do not start the modules still queued
                    for _, future in pending:
                        future.cancel()
        finally:
            torch.set_num_threads(before)
