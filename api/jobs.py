"""Background jobs: a table, claimed with leases, retried with back-off, restart-safe.

The job table is the record of every piece of background work, wherever it runs: on the
service's own thread (`JobWorker`, the embedded default) or on Celery workers over Redis
(`api.queue`, when ``queue.url`` is set), which only carry "run job N" messages. A job is
claimed with a conditional UPDATE (pending and due, or running with a lapsed lease), so
however many workers and messages there are, one claim wins and a job never runs twice at
once. While it runs its lease is renewed; a job whose worker died (kill -9, a lost machine) is
taken over once the lease lapses, and the job's history says so (a line per attempt: who ran
it, how it ended, which worker was lost). Jobs whose every attempt failed stay in the table
as failed (the dead letters, ``GET /jobs?state=failed``).

In queue mode, messages are sent only after the transaction that made the job commits (never
for work that was rolled back); a message lost on the way is sent again by the workers' sweep.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, event, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from api.db import as_utc
from api.models.flights import Job, JobState
from dustpatrol.logs import log_context
from dustpatrol.settings import Settings

log = logging.getLogger(__name__)

Handler = Callable[[Session, dict[str, Any], Settings], None]
HANDLERS: dict[str, Handler] = {}
QUEUE_OF: dict[str, str] = {}  # job kind -> the Celery queue its messages go to
QUEUES = ("frames", "notices", "webhooks", "housekeeping")
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
UNSENT = "dustpatrol.unsent"  # session.info key: messages waiting for the commit


def name_worker(name: str | None = None) -> str:
    """Call this process ``name`` in the jobs it runs (the pid is added: ``name:pid``);
    returns the name in use."""
    global WORKER_NAME
    if name:
        WORKER_NAME = f"{name}:{os.getpid()}"
    return WORKER_NAME


class PermanentJobError(Exception):
    """The job cannot succeed however often it is retried (bad input): fail it at once."""


class Dispatch(Protocol):
    """Sends work to the queue (`api.queue.Broker`); absent in the embedded default."""

    def job(self, job_id: int, queue: str, delay_s: float) -> None: ...

    def delivery(self, bureau_id: int) -> None: ...


def handler(kind: str, queue: str = "frames") -> Callable[[Handler], Handler]:
    """Register ``function`` as the job of ``kind``; its messages go to ``queue``."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}: one of {', '.join(QUEUES)}")

    def register(function: Handler) -> Handler:
        HANDLERS[kind] = function
        QUEUE_OF[kind] = queue
        return function

    return register


def dispatch_of(session: Session) -> Dispatch | None:
    dispatch: Dispatch | None = session.info.get("dispatch")
    return dispatch


def send_after_commit(session: Session, message: tuple[Any, ...]) -> None:
    """Send ``message`` (("job", id, queue, delay_s) or ("delivery", bureau_id)) to the queue
    once the session's transaction commits; nothing in the embedded default."""
    if dispatch_of(session) is not None:
        session.info.setdefault(UNSENT, []).append(message)


@event.listens_for(Session, "after_commit")
def _send_unsent(session: Session) -> None:
    messages = session.info.pop(UNSENT, None)
    dispatch = dispatch_of(session)
    if not messages or dispatch is None:
        return
    for message in messages:
        try:
            if message[0] == "job":
                dispatch.job(message[1], message[2], message[3])
            else:
                dispatch.delivery(message[1])
        except Exception as exc:  # the broker is down: the sweep sends it later
            log.warning("could not send %s to the queue (%s); it will be sent again", message, exc)


@event.listens_for(Session, "after_rollback")
def _drop_unsent(session: Session) -> None:
    session.info.pop(UNSENT, None)


def _publish(session: Session, job: Job) -> None:
    if dispatch_of(session) is None:
        return
    now = datetime.now(UTC)
    job.published_at = now
    delay = max(0.0, (as_utc(job.run_after) - now).total_seconds())
    send_after_commit(session, ("job", job.id, QUEUE_OF[job.kind], delay))


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any],
    max_attempts: int = 3,
    run_after: datetime | None = None,
) -> Job:
    """A new job of ``kind``, due at ``run_after`` (now by default)."""
    if kind not in HANDLERS:
        raise ValueError(f"no handler for job kind {kind!r}")
    job = Job(
        kind=kind,
        payload=payload,
        max_attempts=max_attempts,
        run_after=run_after or datetime.now(UTC),
    )
    session.add(job)
    session.flush()
    _publish(session, job)
    return job


def reschedule(session: Session, job: Job, run_after: datetime) -> None:
    """Run ``job`` again at ``run_after`` (a retry, or a wait)."""
    job.state = JobState.PENDING.value
    job.run_after = run_after
    job.lease_until = None
    _publish(session, job)


def claimable(now: datetime) -> ColumnElement[bool]:
    """Pending and due, or running under a lease that has lapsed (its worker is gone)."""
    return or_(
        and_(Job.state == JobState.PENDING.value, Job.run_after <= now),
        and_(
            Job.state == JobState.RUNNING.value,
            or_(Job.lease_until.is_(None), Job.lease_until < now),
        ),
    )


def recover_interrupted(sessions: sessionmaker[Any]) -> int:
    """Put jobs a dead process left 'running' back in the queue at once (the embedded worker,
    the only one, on start); returns how many."""
    with sessions() as session:
        result = session.execute(
            update(Job)
            .where(Job.state == JobState.RUNNING.value)
            .values(state=JobState.PENDING.value, lease_until=None)
        )
        session.commit()
        return int(getattr(result, "rowcount", 0) or 0)


def run_one(sessions: sessionmaker[Any], settings: Settings) -> bool:
    """Claim and run the oldest due job; False when there was none."""
    with sessions() as session:
        candidate = session.scalar(
            select(Job.id).where(claimable(datetime.now(UTC))).order_by(Job.id).limit(1)
        )
    if candidate is None:
        return False
    run_job(sessions, settings, candidate)
    return True


def run_job(sessions: sessionmaker[Any], settings: Settings, job_id: int) -> str:
    """Claim job ``job_id`` and run it: "done", "retry", "failed", or "skipped" when it is not
    claimable (done already, running elsewhere, not due, gone): a duplicate message."""
    now = datetime.now(UTC)
    lease_s = settings.queue.lease_s
    with sessions() as session:
        before = session.execute(
            select(Job.state, Job.worker, Job.attempts).where(Job.id == job_id)
        ).first()
        claimed = session.execute(
            update(Job)
            .where(Job.id == job_id, claimable(now))
            .values(
                state=JobState.RUNNING.value,
                attempts=Job.attempts + 1,
                started_at=now,
                lease_until=now + timedelta(seconds=lease_s),
                worker=WORKER_NAME,
            )
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if not getattr(claimed, "rowcount", 0) or before is None:
            return "skipped"
        job = session.get(Job, job_id)
        assert job is not None
        session.refresh(job)
        with log_context(job_id=job.id, job_kind=job.kind):
            if before.state == JobState.RUNNING.value:
                lost = f"attempt {before.attempts} was lost with its worker {before.worker}"
                log.warning("job %s (%s): %s; taken over", job.id, job.kind, lost)
                _note(job, f"{lost} (its lease lapsed); taken over by {WORKER_NAME}")
                job.error = lost
                session.commit()
            if job.attempts > job.max_attempts:  # every attempt died with its worker
                _finish(session, job, JobState.FAILED, f"{job.error}; no attempts left")
                return "failed"
            with _Heartbeat(sessions, job.id, lease_s):
                return _execute(session, job, settings)


def _execute(session: Session, job: Job, settings: Settings) -> str:
    try:
        HANDLERS[job.kind](session, dict(job.payload), settings)
    except PermanentJobError as exc:
        session.rollback()
        _finish(session, job, JobState.FAILED, str(exc))
        return "failed"
    except Exception as exc:  # a job failing must never stop the worker
        session.rollback()
        log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
        if job.attempts >= job.max_attempts:
            _finish(session, job, JobState.FAILED, f"{exc}\n{traceback.format_exc(limit=3)}")
            return "failed"
        job.error = str(exc)
        delay = 2 ** (job.attempts - 1)
        _note(job, f"attempt {job.attempts} on {WORKER_NAME} failed: {exc}; again in {delay} s")
        reschedule(session, job, datetime.now(UTC) + timedelta(seconds=delay))
        session.commit()
        return "retry"
    _finish(session, job, JobState.DONE, None)
    return "done"


def _note(job: Job, line: str) -> None:
    """Add a line to the job's history (written with the job's next commit)."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    job.history = f"{job.history or ''}{stamp} {line}\n"


def _finish(session: Session, job: Job, state: JobState, error: str | None) -> None:
    outcome = "done" if error is None else f"{state.value}: {error.splitlines()[0]}"
    _note(job, f"attempt {job.attempts} on {WORKER_NAME}: {outcome}")
    job.state = state.value
    job.error = error
    job.finished_at = datetime.now(UTC)
    job.lease_until = None
    session.commit()


class _Heartbeat:
    """Renews a running job's lease every third of it, on its own thread and session."""

    def __init__(self, sessions: sessionmaker[Any], job_id: int, lease_s: float) -> None:
        self.sessions = sessions
        self.job_id = job_id
        self.lease_s = lease_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dustpatrol-lease", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                with self.sessions() as session:
                    session.execute(
                        update(Job)
                        .where(Job.id == self.job_id, Job.state == JobState.RUNNING.value)
                        .values(lease_until=datetime.now(UTC) + timedelta(seconds=self.lease_s))
                    )
                    session.commit()
            except Exception as exc:  # the database is briefly away: try again next beat
                log.warning("could not renew the lease of job %s: %s", self.job_id, exc)


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
