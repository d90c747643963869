"""Delivering notices to bureaus' webhooks: at least once, signed, retried, logged.

A message is written to the outbox in the same transaction as the notice change, so a crash
can delay a delivery but never lose it. Deliveries carry ``X-Dustpatrol-Signature:
sha256=<hex HMAC-SHA256 of the body>`` keyed with the bureau's secret and an
``X-Dustpatrol-Delivery`` id the receiver uses to drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.models.bureaus import Bureau
from api.models.outbox import DeliveryAttempt, OutboxMessage
from dustpatrol.settings import Settings

MAX_ATTEMPTS = 12
TIMEOUT_S = 10.0
BATCH = 50


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def announce(session: Session, bureau_id: int | None, event: str, payload: dict[str, Any]) -> None:
    """Queue a message for the bureau's webhook (no-op for a bureau without one)."""
    if bureau_id is None:
        return
    bureau = session.get(Bureau, bureau_id)
    if bureau is None or not bureau.webhook_url:
        return
    session.add(OutboxMessage(bureau_id=bureau_id, event=event, payload=payload))


def deliver_due(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Try every due message once; returns how many were delivered."""
    now = now or datetime.now(UTC)
    due = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.state == "pending", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.id)
        .limit(BATCH)
    ).all()
    delivered = 0
    with httpx.Client(timeout=TIMEOUT_S) as client:
        for message in due:
            bureau = session.get(Bureau, message.bureau_id)
            if bureau is None or not bureau.webhook_url:
                message.state = "failed"
                continue
            body = json.dumps(
                {"event": message.event, "delivery": message.id, **message.payload},
                ensure_ascii=False,
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "X-Dustpatrol-Event": message.event,
                "X-Dustpatrol-Delivery": str(message.id),
                "X-Dustpatrol-Signature": sign(bureau.webhook_secret or "", body),
            }
            message.attempts += 1
            status_code: int | None = None
            error: str | None = None
            try:
                response = client.post(bureau.webhook_url, content=body, headers=headers)
                status_code = response.status_code
                if response.is_success:
                    message.state = "delivered"
                    message.delivered_at = datetime.now(UTC)
                    delivered += 1
                else:
                    error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            session.add(
                DeliveryAttempt(
                    message_id=message.id,
                    url=bureau.webhook_url,
                    status_code=status_code,
                    error=error,
                )
            )
            if message.state == "pending":
                if message.attempts >= MAX_ATTEMPTS:
                    message.state = "failed"
                else:
                    message.next_attempt_at = datetime.now(UTC) + timedelta(
                        seconds=min(3600, 2**message.attempts)
                    )
            session.commit()  # one message at a time: a crash loses at most one attempt's record
    return delivered
