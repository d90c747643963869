"""Background jobs: a table, an in-process worker, retries with back-off, restart-safe.

A job is claimed with a conditional UPDATE (state pending -> running), so several workers, in
one process or many, never run the same job twice. Jobs left 'running' by a process that died
are put back to 'pending' when a worker starts.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from api.models.flights import Job, JobState
from dustpatrol.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Session, dict[str, Any], Settings], None]
HANDLERS: dict[str, Handler] = {}


class PermanentJobError(Exception):
    """The job cannot succeed however often it is retried (bad input): fail it at once."""


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(function: Handler) -> Handler:
        HANDLERS[kind] = function
        return function

    return register


def enqueue(session: Session, kind: str, payload: dict[str, Any], max_attempts: int = 3) -> Job:
    if kind not in HANDLERS:
        raise ValueError(f"no handler for job kind {kind!r}")
    job = Job(kind=kind, payload=payload, max_attempts=max_attempts)
    session.add(job)
    session.flush()
    return job


def recover_interrupted(sessions: sessionmaker[Any]) -> int:
    """Put jobs a dead process left 'running' back in the queue; returns how many."""
    with sessions() as session:
        result = session.execute(
            update(Job)
            .where(Job.state == JobState.RUNNING.value)
            .values(state=JobState.PENDING.value)
        )
        session.commit()
        return int(getattr(result, "rowcount", 0) or 0)


def run_one(sessions: sessionmaker[Any], settings: Settings) -> bool:
    """Claim and run the oldest due job; False when there was none."""
    now = datetime.now(UTC)
    with sessions() as session:
        candidate = session.scalar(
            select(Job.id)
            .where(Job.state == JobState.PENDING.value, Job.run_after <= now)
            .order_by(Job.id)
            .limit(1)
        )
        if candidate is None:
            return False
        claimed = session.execute(
            update(Job)
            .where(Job.id == candidate, Job.state == JobState.PENDING.value)
            .values(state=JobState.RUNNING.value, attempts=Job.attempts + 1, started_at=now)
        )
        session.commit()
        if not getattr(claimed, "rowcount", 0):
            return True  # another worker took it
        job = session.get(Job, candidate)
        assert job is not None
        try:
            HANDLERS[job.kind](session, dict(job.payload), settings)
        except PermanentJobError as exc:
            session.rollback()
            _finish(session, job, JobState.FAILED, str(exc))
        except Exception as exc:  # a job failing must never stop the worker
            session.rollback()
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
            if job.attempts >= job.max_attempts:
                _finish(session, job, JobState.FAILED, f"{exc}\n{traceback.format_exc(limit=3)}")
            else:
                job.state = JobState.PENDING.value
                job.error = str(exc)
                job.run_after = datetime.now(UTC) + timedelta(seconds=2 ** (job.attempts - 1))
                session.commit()
        else:
            _finish(session, job, JobState.DONE, None)
        return True


def _finish(session: Session, job: Job, state: JobState, error: str | None) -> None:
    job.state = state.value
    job.error = error
    job.finished_at = datetime.now(UTC)
    session.commit()


class JobWorker:
    """Runs jobs on a background thread of the API process (the embedded default)."""

    def __init__(
        self,
        sessions: sessionmaker[Any],
        settings: Settings,
        poll_s: float = 0.2,
        housekeeping_s: float = 60.0,
        housekeeping: Callable[[Session, Settings], object] | None = None,
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.poll_s = poll_s
        self.housekeeping_s = housekeeping_s
        self.housekeeping = housekeeping  # periodic work, e.g. marking notices overdue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        recovered = recover_interrupted(self.sessions)
        if recovered:
            log.info("requeued %d interrupted job(s)", recovered)
        self._thread = threading.Thread(target=self._run, name="dustpatrol-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        next_housekeeping = 0.0
        while not self._stop.is_set():
            if self.housekeeping is not None and time.monotonic() >= next_housekeeping:
                next_housekeeping = time.monotonic() + self.housekeeping_s
                try:
                    with self.sessions() as session:
                        self.housekeeping(session, self.settings)
                except Exception:
                    log.exception("housekeeping failed")
            try:
                busy = run_one(self.sessions, self.settings)
            except Exception:  # database briefly unavailable: wait and go on
                log.exception("job worker error")
                busy = False
            if not busy:
                self._stop.wait(self.poll_s)
