"""Side effects of the accounts app, run by Celery after the write commits."""

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from .models import Invitation

SWEEP_BATCH = 100


@shared_task
def invitation_send(invitation_id: int) -> bool:
    """E-mail the invitation link (signed, single-use, expiring at `expires_at`) if its e-mail
    is wanted (`email_wanted_at`), then mark it sent. The row is locked while it is sent, so
    the task queued after commit and the sweep never both send it; a worker that dies while
    sending leaves it wanted (sent again later: at least once). True when this run sent it;
    an SMTP error raises (the row stays wanted)."""
    from .services import invitation_token

    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("organization", "invited_by")
            .filter(pk=invitation_id, email_wanted_at__isnull=False)
            .first()
        )
        if invitation is None or invitation.status != "pending":
            return False
        link = settings.PORTAL_BASE_URL.rstrip("/") + reverse(
            "invitation-accept", args=[invitation_token(invitation)]
        )
        context = {"invitation": invitation, "link": link}
        send_mail(
            subject=f"You are invited to {invitation.organization.name}",
            message=render_to_string("emails/invitation.txt", context),
            from_email=None,
            recipient_list=[invitation.email],
        )
        Invitation.objects.filter(pk=invitation.pk).update(
            email_wanted_at=None, emailed_at=timezone.now()
        )
    return True


@shared_task
def invitations_sweep() -> int:
    """Every minute (beat): send the e-mails of pending invitations wanted for longer than
    settings.SWEEP_AFTER (a broker that was down, a worker lost), at most SWEEP_BATCH a run.
    Returns how many were sent."""
    now = timezone.now()
    due = Invitation.objects.filter(
        email_wanted_at__lte=now - settings.SWEEP_AFTER,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=now,
    ).values_list("pk", flat=True)[:SWEEP_BATCH]
    return sum(invitation_send(pk) for pk in list(due))
