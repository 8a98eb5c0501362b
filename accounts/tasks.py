"""Side effects of the accounts app, run by Celery after the write commits."""

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse

from .models import Invitation


@shared_task
def invitation_send(invitation_id: int) -> None:
    """E-mail the invitation link (signed, single-use, expiring at `expires_at`)."""
    from .services import invitation_token

    invitation = Invitation.objects.select_related("organization", "invited_by").get(
        pk=invitation_id
    )
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
