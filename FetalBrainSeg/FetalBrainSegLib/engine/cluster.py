"""Cohort segmentation on an existing Dask distributed cluster (the `cluster` extra): one task per
stack, each worker process loading the model once per recipe and thread.

The stacks' paths must be readable, and the output folder writable, from every worker (a shared
file system, as on a Slurm or PBS machine). A mask is written whole or not at all, so a worker that
dies mid-stack leaves nothing behind; the scheduler then runs the stack on another worker, up to its
`distributed.scheduler.allowed-failures` (3 by default), after which the stack is reported failed.
At Ctrl-C the queued stacks are cancelled and the running ones finished, so the report lists every mask.
"""

from __future__ import annotations

import contextlib
import pickle
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from .cohort import MAX_TRIES, Outcome, segment_one

MISSING = "--dask-scheduler needs Dask's distributed scheduler: pip install 'fetalbrainseg[cluster]'"

RUNNING_STACKS_WAIT_S = 60  # at Ctrl-C, the longest wait for the stacks already running on workers
SCHEDULER_ANSWER_S = 10  # the longest wait for the scheduler to answer before the run is refused

_segmenters: dict[tuple[bytes, int], object] = {}  # in each worker process: (recipe, thread) -> its segmenter


def _segment_on_worker(make_segmenter: Callable, image: Path, output: Path) -> Outcome:
    key = (pickle.dumps(make_segmenter), threading.get_ident())
    if key not in _segmenters:
        _segmenters[key] = make_segmenter()
    return segment_one(_segmenters[key], image, output)


def segment_on_dask(make_segmenter: Callable, jobs: list[tuple[Path, Path]], scheduler: str) -> Iterator[Outcome]:
    """Segment (image, output) jobs as tasks on the Dask cluster whose scheduler is at `scheduler`
    (tcp://host:port); yields each outcome as it finishes. `make_segmenter` must be picklable."""
    try:
        from distributed import Client, as_completed
        from distributed.scheduler import KilledWorker
    except ImportError:
        raise ModuleNotFoundError(MISSING) from None
    try:
        client = Client(scheduler, timeout=f"{SCHEDULER_ANSWER_S}s")
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(f"no Dask scheduler answers at {scheduler!r} ({exc})") from None
    with client:
        futures = {
            client.submit(_segment_on_worker, make_segmenter, image, output, pure=False, retries=MAX_TRIES - 1): (
                image,
                output,
            )
            for image, output in jobs
        }
        try:
            for future in as_completed(list(futures)):
                image, output = futures.pop(future)
                try:
                    yield future.result()
                except KilledWorker:
                    yield Outcome(image, output, f"{image}: every worker that took it died; not segmented")
                except Exception as exc:  # the task's own error, whatever it is, fails that stack only
                    yield Outcome(image, output, f"{image}: {exc.__class__.__name__}: {exc}")
                finally:
                    future.release()  # its worker may die later: a finished stack is not to be redone
        except BaseException:  # Ctrl-C, or the caller closed the iterator
            _stop(client, list(futures))
            raise


def _stop(client, futures: list) -> None:
    """Cancel the queued stacks. A task running on a worker cannot be stopped there: wait for those (a
    stack takes seconds), so that the masks they write are on disk when the caller reports what is."""
    from distributed import wait

    running = {key for keys in client.processing().values() for key in keys}
    client.cancel([f for f in futures if f.key not in running])
    with contextlib.suppress(TimeoutError):  # one still running then writes its mask after the report
        wait([f for f in futures if f.key in running], timeout=RUNNING_STACKS_WAIT_S)
