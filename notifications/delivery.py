"""Sending one outbox message once, by channel: a signed webhook (Standard Webhooks, httpx), an
e-mail (Django's e-mail backend), an SMS (Twilio's Messages API over httpx). Each returns an
`Outcome`; none touches the database (the task records the attempt)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx
from django.conf import settings
from django.core.mail import send_mail
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from .models import OutboxMessage
from .urlcheck import UrlRefused, UrlUnresolved, pin_url

USER_AGENT = "credit-portal-webhooks/1"


@dataclass
class Outcome:
    success: bool
    status_code: int | None = None
    error: str = ""
    response_body: str = ""
    permanent: bool = False  # no retry: the message fails now
    duration_ms: int = 0


def signed_request(message: OutboxMessage, secret: str) -> tuple[bytes, dict[str, str]]:
    """The body and the Standard Webhooks headers of one attempt (signed now: receivers refuse
    timestamps more than five minutes away)."""
    body = json.dumps(message.payload, separators=(",", ":"), ensure_ascii=False)
    now = timezone.now()
    signature = Webhook(secret).sign(msg_id=message.message_id, timestamp=now, data=body)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": message.message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    return body.encode(), headers


def send_webhook(message: OutboxMessage) -> Outcome:
    """POST the signed payload to the endpoint's URL, connected to the address its host resolved
    to when checked (`urlcheck.pin_url`). A refused URL fails the message now; a host that does
    not resolve, a timeout, a connection error or a non-2xx answer is retried."""
    endpoint = message.endpoint
    if endpoint is None:
        return Outcome(False, error="The endpoint was deleted.", permanent=True)
    if not endpoint.enabled:
        return Outcome(False, error="The endpoint is disabled.", permanent=True)
    try:
        # Checked again (DNS may point elsewhere since it was created), and the connection goes
        # to the address checked, not to a second resolution of the name (DNS rebinding).
        pinned = pin_url(endpoint.url)
    except UrlUnresolved as exc:
        return Outcome(False, error=str(exc))  # retried: the name may resolve again
    except UrlRefused as exc:
        return Outcome(False, error=f"Refused: {exc}", permanent=True)
    body, headers = signed_request(message, endpoint.secret)
    try:
        with httpx.Client(timeout=settings.WEBHOOK_TIMEOUT_SECONDS) as client:
            response = client.post(
                pinned.url,
                content=body,
                headers={**headers, "host": pinned.host_header},
                extensions=pinned.extensions,
                follow_redirects=False,
            )
    except httpx.HTTPError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:1000])
    ok = 200 <= response.status_code < 300
    return Outcome(
        ok,
        status_code=response.status_code,
        error="" if ok else f"HTTP {response.status_code}",
        response_body=response.text[:1000],
    )


def send_email(message: OutboxMessage) -> Outcome:
    try:
        send_mail(
            subject=message.payload.get("subject", ""),
            message=message.payload.get("body", ""),
            from_email=None,
            recipient_list=[message.target],
        )
    except Exception as exc:  # noqa: BLE001 - any backend error is retried
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:1000])
    return Outcome(True)


def send_sms(message: OutboxMessage) -> Outcome:
    """Twilio's REST Messages API: POST /2010-04-01/Accounts/{sid}/Messages.json, form-encoded
    To/From/Body, basic auth; 201 with the message's `sid`."""
    sid, token, sender = (
        settings.TWILIO_ACCOUNT_SID,
        settings.TWILIO_AUTH_TOKEN,
        settings.TWILIO_FROM,
    )
    if not (sid and token and sender):
        return Outcome(False, error="SMS is not configured (TWILIO_*).", permanent=True)
    url = f"{settings.TWILIO_API_BASE.rstrip('/')}/2010-04-01/Accounts/{sid}/Messages.json"
    try:
        response = httpx.post(
            url,
            data={"To": message.target, "From": sender, "Body": message.payload.get("body", "")},
            auth=(sid, token),
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
        )
    except httpx.HTTPError as exc:
        return Outcome(False, error=f"{type(exc).__name__}: {exc}"[:1000])
    if response.status_code in (200, 201):
        try:
            sent = response.json().get("sid", "")
        except ValueError:
            sent = ""
        return Outcome(True, status_code=response.status_code, response_body=sent)
    permanent = 400 <= response.status_code < 500 and response.status_code != 429
    return Outcome(
        False,
        status_code=response.status_code,
        error=f"HTTP {response.status_code}",
        response_body=response.text[:1000],
        permanent=permanent,
    )


SENDERS = {
    OutboxMessage.Channel.WEBHOOK: send_webhook,
    OutboxMessage.Channel.EMAIL: send_email,
    OutboxMessage.Channel.SMS: send_sms,
}


def send(message: OutboxMessage) -> Outcome:
    started = time.monotonic()
    outcome = SENDERS[message.channel](message)
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    return outcome
