"""Requests that arrive together are ranked together: dynamic batching for the endpoint.

The server runs each request in its own thread. The model ranks one batch at a time (several
at once only fight over the cores and the GIL), so requests that arrive while a batch is being
ranked queue up, and the next batch takes all of them: one call of ``rank`` for their users
together. Ranking eight users together costs about a quarter of ranking them one by one
(candidate generation, the frame and the trees have a fixed cost per call), and every user's
answer is the same either way: the tie rule keys on the user, never on the batch position
(``features.ties``), and each request keeps its own ``k``, candidates, history and exclusions.

No thread runs a scheduler: the first waiting thread that finds the model free ranks the batch
(its own request and those queued before and after it), hands each request its rows and wakes
the others. A request that is still queued at its deadline leaves the queue with
``RequestWaitedTooLongError`` and is not ranked. A request that brings its own candidates is
ranked alone (a shared call would compute its neighbours' source scores another way). If a
batch of several requests fails, each of them is ranked again alone, so a request only ever
gets its own error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from recsys.errors import RequestDeadlineError
from serving.requests import RecommendRequest

MAX_BATCH_USERS = 64  # users of queued requests ranked together (a larger request goes alone)


class RequestWaitedTooLongError(RequestDeadlineError):
    """The request was still waiting for its turn at its deadline; no work was done on it."""


@dataclass(eq=False)
class _Job:
    requests: list[RecommendRequest]
    deadline: float | None
    wait_s: float | None = None  # the wait a RequestWaitedTooLongError names (default: the time waited)
    queued_at: float = field(default_factory=time.monotonic)
    rows: list[dict] | None = None
    error: BaseException | None = None
    done: bool = False

    @property
    def explicit(self) -> bool:
        """A request of the job brings its own candidates (see ``RequestBatcher._take``)."""
        return any(r.candidates is not None for r in self.requests)

    def give_up(self) -> None:
        waited = self.wait_s if self.wait_s is not None else time.monotonic() - self.queued_at
        self.error = RequestWaitedTooLongError(f"server busy: the request waited {waited:g} s for its turn; "
                                               "retry later or send fewer users per request")
        self.done = True


class RequestBatcher:
    """Ranks the requests of concurrent callers in shared batches.

    rank: (requests, deadline or None) -> one row dict per request, in order (``recommend``'s
        rows); called by one thread at a time.
    max_batch_users: a batch takes queued requests, oldest first, while their users fit.
    """

    def __init__(self, rank: Callable[[list[RecommendRequest], float | None], list[dict]], *,
                 max_batch_users: int = MAX_BATCH_USERS) -> None:
        self._rank = rank
        self._max_batch_users = max_batch_users
        self._changed = threading.Condition()
        self._queue: list[_Job] = []
        self._busy = False
        self.batches = 0  # batches ranked (for tests and benchmarks)
        self.largest_batch = 0  # requests in the largest one

    def rank(self, requests: list[RecommendRequest], deadline: float | None = None,
             wait_s: float | None = None) -> list[dict]:
        """Rows for ``requests`` (one dict each), ranked in a batch with whatever else is queued.

        deadline: ``time.monotonic()`` value after which the work stops (RequestDeadlineError)
            and a request still queued then gives up (RequestWaitedTooLongError, no work done
            on it); wait_s: the wait that error names (default: the time waited).
        """
        job = _Job(requests=requests, deadline=deadline, wait_s=wait_s)
        with self._changed:
            self._queue.append(job)
            try:
                self._wait_for(job)
            except BaseException:  # interrupted while ranking others' batch: leave nothing behind
                if job in self._queue:
                    self._queue.remove(job)
                raise
        if job.error is not None:
            raise job.error
        return job.rows

    def _wait_for(self, job: _Job) -> None:
        """Until ``job`` is done: rank batches while the model is free, else wait (the lock held)."""
        deadline = job.deadline
        while not job.done:
            if not self._busy:
                batch = self._take()  # may end this job: its deadline passed while it queued
                if not batch:
                    continue
                self._busy = True
                self._changed.release()
                try:
                    self._run(batch)
                finally:
                    for other in batch:  # interrupted (KeyboardInterrupt...): nobody waits forever
                        if not other.done:
                            other.error, other.done = RuntimeError("the batch was interrupted"), True
                    self._changed.acquire()
                    self._busy = False
                    self._changed.notify_all()
                continue
            if deadline is None or job not in self._queue:
                self._changed.wait()  # being ranked (the work checks the deadline) or no deadline
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                self._queue.remove(job)
                job.give_up()
                break
            self._changed.wait(timeout=left)

    def _take(self) -> list[_Job]:
        """The next batch, oldest jobs first: queued jobs whose deadline has passed leave the queue
        unranked; a job that brings its own candidates goes alone (scores of generated and explicit
        candidates are computed differently when they share a call, so another caller's list
        must not change this caller's answer); the others join while their users fit."""
        now = time.monotonic()
        for expired in [j for j in self._queue if j.deadline is not None and j.deadline <= now]:
            self._queue.remove(expired)
            expired.give_up()
        batch, users = [], 0
        while self._queue:
            job = self._queue[0]
            if batch and (job.explicit or batch[0].explicit or users + len(job.requests) > self._max_batch_users):
                break
            batch.append(self._queue.pop(0))
            users += len(job.requests)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        """Rank the batch and hand each job its rows; with several jobs, a failure is retried
        job by job so that each gets its own rows or its own error."""
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        deadlines = [job.deadline for job in batch]
        deadline = None if any(d is None for d in deadlines) else max(deadlines)
        try:
            rows = self._rank([r for job in batch for r in job.requests], deadline)
        except Exception as exc:  # noqa: BLE001 - handed to the callers, who raise it
            if len(batch) == 1:
                batch[0].error, batch[0].done = exc, True
                return
            for job in batch:
                try:
                    job.rows = self._rank(job.requests, job.deadline)
                except Exception as own:  # noqa: BLE001
                    job.error = own
                job.done = True
            return
        start = 0
        for job in batch:
            job.rows, job.done = rows[start:start + len(job.requests)], True
            start += len(job.requests)
