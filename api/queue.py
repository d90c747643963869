"""Scaled out: background work on Celery workers over a Redis broker (``queue.url``).

The messages only say what to run ("job 42", "deliver bureau 3's webhooks", "housekeeping");
the work itself, its state, retries and results stay in the database (`api.jobs`, the webhook
outbox), so the same job functions run here and in the embedded worker, and a duplicate or
replayed message is harmless: its claim fails and it is acknowledged.

Queues: ``frames`` (metadata and detection, the bulk), ``notices`` (a flight's findings and
its notices), ``webhooks`` (deliveries) and ``housekeeping`` (deadlines), so a burst of
frames cannot hold up notices. Messages are acknowledged after the task (``acks_late``) and
given back when the worker process dies (``reject_on_worker_lost``); every worker also runs a
sweep (one at a time across all workers, by a Redis lock) that re-sends what a broker lost,
takes over jobs whose worker died (lapsed leases) and sends the housekeeping message.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from celery import Celery
from celery.signals import worker_process_init
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import sessionmaker

from api.db import make_engine, session_factory
from api.jobs import QUEUE_OF, QUEUES, claimable, name_worker, run_job
from api.models.flights import Job, JobState
from api.models.outbox import OutboxMessage
from dustpatrol.logs import log_context
from dustpatrol.settings import Settings

log = logging.getLogger(__name__)

JOB_TASK = "dustpatrol.job"
DELIVERY_TASK = "dustpatrol.deliver"
HOUSEKEEPING_TASK = "dustpatrol.housekeeping"
SWEEP_LOCK = "dustpatrol:sweep"
HOUSEKEEPING_LOCK = "dustpatrol:housekeeping"
SWEEP_BATCH = 500


def celery_app(settings: Settings) -> Celery:
    """The Celery application for ``settings.queue.url`` (publishers and workers alike)."""
    app = Celery("dustpatrol", broker=settings.queue.url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_default_queue="frames",
        task_routes={
            DELIVERY_TASK: {"queue": "webhooks"},
            HOUSEKEEPING_TASK: {"queue": "housekeeping"},
        },
        broker_connection_retry_on_startup=True,
        # A broker that does not answer must not hold up the request that committed the job:
        # give up quickly (the sweep sends the message later).
        broker_connection_timeout=2.0,
        task_publish_retry_policy={
            "max_retries": 1,
            "interval_start": 0.0,
            "interval_step": 0.2,
            "interval_max": 0.2,
        },
        broker_transport_options={"visibility_timeout": max(3600.0, settings.queue.republish_s)},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


class Broker:
    """Sends the service's work to the queues (`api.jobs.Dispatch`)."""

    def __init__(self, settings: Settings, app: Celery | None = None) -> None:
        self.app = app or celery_app(settings)

    def job(self, job_id: int, queue: str, delay_s: float) -> None:
        self.app.send_task(JOB_TASK, args=(job_id,), queue=queue, countdown=delay_s or None)

    def delivery(self, bureau_id: int) -> None:
        self.app.send_task(DELIVERY_TASK, args=(bureau_id,), queue="webhooks")

    def housekeeping(self) -> None:
        self.app.send_task(HOUSEKEEPING_TASK, queue="housekeeping")


def dispatching_sessions(settings: Settings) -> sessionmaker[Any]:
    """Sessions whose committed jobs and deliveries are sent to the queue."""
    sessions = session_factory(
        make_engine(
            settings.database.url, settings.database.echo, settings.database.sqlite_synchronous
        )
    )
    sessions.configure(info={**sessions.kw["info"], "dispatch": Broker(settings)})
    return sessions


def sweep(sessions: sessionmaker[Any], broker: Broker, settings: Settings) -> dict[str, int]:
    """Send again what is due but whose message is gone: jobs waiting longer than
    ``republish_s`` since their message, jobs whose worker's lease lapsed (not sent since),
    and bureaus with due webhook deliveries. Returns the counts."""
    now = datetime.now(UTC)
    stale = now - timedelta(seconds=settings.queue.republish_s)
    with sessions() as session:
        rows = session.execute(
            select(Job.id, Job.kind, Job.state)
            .where(
                claimable(now),
                or_(
                    Job.published_at.is_(None),
                    and_(Job.state == JobState.PENDING.value, Job.published_at < stale),
                    and_(Job.state == JobState.RUNNING.value, Job.published_at < Job.lease_until),
                ),
            )
            .order_by(Job.id)
            .limit(SWEEP_BATCH)
        ).all()
        if rows:
            session.execute(
                update(Job).where(Job.id.in_([r.id for r in rows])).values(published_at=now)
            )
            session.commit()
        bureaus = session.scalars(
            select(OutboxMessage.bureau_id)
            .where(OutboxMessage.state == "pending", OutboxMessage.next_attempt_at <= now)
            .distinct()
        ).all()
    for row in rows:
        if row.state == JobState.RUNNING.value:
            log.warning("job %s (%s): its worker's lease lapsed; sent again", row.id, row.kind)
        broker.job(row.id, QUEUE_OF.get(row.kind, "frames"), 0.0)
    for bureau_id in bureaus:
        broker.delivery(bureau_id)
    return {"jobs": len(rows), "bureaus": len(bureaus)}


class Worker:
    """``dustpatrol worker``: a Celery worker for ``queues``, plus the sweep thread."""

    def __init__(self, settings: Settings, queues: list[str], name: str | None = None) -> None:
        unknown = sorted(set(queues) - set(QUEUES))
        if unknown:
            raise ValueError(
                f"unknown queue(s) {', '.join(unknown)}: choose among {', '.join(QUEUES)}"
            )
        if not settings.queue.url:
            raise ValueError(
                "queue.url is not set: set DUSTPATROL_QUEUE__URL=redis://host:6379/0 (without "
                "it the service runs its jobs in its own process and needs no worker)"
            )
        import api.services.analysis
        import api.services.frames  # noqa: F401  (register the job handlers)
        from api.services.notices import housekeeping
        from api.services.webhooks import WebhookDispatcher

        self.settings = settings
        self.queues = queues
        self.name = name_worker(name)
        self.sessions = dispatching_sessions(settings)
        self.app = celery_app(settings)
        self.broker = Broker(settings, self.app)
        self.redis = redis.Redis.from_url(settings.queue.url)
        self._stop = threading.Event()
        deliveries = WebhookDispatcher(self.sessions, settings)
        sessions = self.sessions

        engine = sessions.kw["bind"]

        @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
        def _fresh_connections(**_: object) -> None:  # a forked child must not share sockets
            engine.dispose(close=False)

        @self.app.task(name=JOB_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
        def run(job_id: int) -> str:
            outcome = run_job(sessions, settings, job_id)
            log.info("job %s: %s", job_id, outcome)
            return outcome

        @self.app.task(name=DELIVERY_TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
        def deliver(bureau_id: int) -> None:
            with log_context(bureau_id=bureau_id):
                deliveries.serve(bureau_id)

        @self.app.task(name=HOUSEKEEPING_TASK, acks_late=True)  # type: ignore[untyped-decorator]
        def keep_house() -> None:
            with sessions() as session:
                housekeeping(session, settings)

    def run(self, concurrency: int = 1) -> None:
        """Consume until stopped (SIGTERM: finish the task in hand, then leave)."""
        ticker = threading.Thread(target=self._tick, name="dustpatrol-sweep", daemon=True)
        ticker.start()
        try:
            self.app.worker_main(
                [
                    "worker",
                    f"--queues={','.join(self.queues)}",
                    f"--hostname={self.name}",
                    "--pool=solo" if concurrency == 1 else "--pool=prefork",
                    f"--concurrency={concurrency}",
                    f"--loglevel={self.settings.log.level}",
                    "--without-gossip",
                    "--without-mingle",
                ]
            )
        finally:
            self._stop.set()

    def _tick(self) -> None:
        period = self.settings.queue.sweep_s
        while not self._stop.wait(period):
            try:
                if self.redis.set(SWEEP_LOCK, self.name, nx=True, px=int(period * 900)):
                    sent = sweep(self.sessions, self.broker, self.settings)
                    if sent["jobs"]:
                        log.info("sweep sent %d job(s) again", sent["jobs"])
                if "housekeeping" in self.queues and self.redis.set(
                    HOUSEKEEPING_LOCK,
                    self.name,
                    nx=True,
                    px=int(self.settings.queue.housekeeping_s * 1000),
                ):
                    self.broker.housekeeping()
            except Exception as exc:  # broker or database briefly away: next tick
                log.warning("sweep failed: %s", exc)
