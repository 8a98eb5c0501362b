"""Notification pages: the member's notifications (mark read), the header's bell (polled), their
preferences (channels per event type, the mobile number), and the organization's webhooks
(`org:write`: create with the secret shown once, edit, rotate, test, delete after a confirmation
step, the deliveries log with re-send). The writes are the services the API uses."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import form_errors
from accounts.pages import actor, confirm, organization_page, perform
from portal.errors import ApplicationError

from . import selectors, services
from .events import EVENT_TYPES
from .forms import CHANNELS, PreferencesForm, WebhookEditForm, WebhookForm

SECRET_SESSION_KEY = "notifications.new_webhook_secret"  # noqa: S105 ({id: secret}, popped once)
PAGE_SIZE = 100


def _back(request, name: str, **kwargs) -> str:
    return reverse(name, kwargs={"org": request.organization.slug, **kwargs})


# Notifications ----------------------------------------------------------------------------------


@organization_page(scope="org:read")
def notification_list(request):
    rows = selectors.notification_list(organization=request.organization, user=request.user)
    unread = rows.filter(read_at__isnull=True).count()
    return render(
        request,
        "notifications/list.html",
        {"notifications": list(rows[:PAGE_SIZE]), "unread": unread},
    )


@organization_page(scope="org:read")
def notification_bell(request):
    """The header's bell: the unread count (polled by the page frame, like the balance)."""
    count = selectors.notification_unread_count(
        organization=request.organization, user=request.user
    )
    response = render(request, "notifications/bell.html", {"count": count})
    response["Cache-Control"] = "no-store"
    return response


@organization_page(scope="org:read")
@require_POST
def notification_read(request, id: str):
    notification = selectors.notification_get(
        organization=request.organization, user=request.user, id=id
    )
    if notification is None:
        raise Http404("No such notification")
    return perform(
        request,
        lambda: services.notification_mark_read(notification=notification),
        done="Marked as read.",
        then=_back(request, "notifications"),
    )


@organization_page(scope="org:read")
@require_POST
def notification_read_all(request):
    return perform(
        request,
        lambda: services.notifications_mark_all_read(
            organization=request.organization, user=request.user
        ),
        done=lambda n: f"{n} notification{'s' if n != 1 else ''} marked as read.",
        then=_back(request, "notifications"),
    )


@organization_page(scope="org:read")
@require_http_methods(["GET", "POST"])
def notification_preferences(request):
    organization, user = request.organization, request.user
    types = list(EVENT_TYPES)
    initial = {"phone": user.phone}
    for type in types:
        current = services.preferences_of(organization=organization, user_ids=[user.pk], type=type)
        for channel, _ in CHANNELS:
            initial[f"{type}__{channel}"] = current[user.pk][channel]
    form = PreferencesForm(request.POST or None, types=types, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.notification_preferences_set(
                organization=organization,
                user=user,
                preferences=form.preferences(),
                phone=form.cleaned_data["phone"],
                actor=actor(request),
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, "Notification preferences saved.")
            return redirect("notification-preferences", org=organization.slug)
    return render(
        request,
        "notifications/preferences.html",
        {"form": form, "channels": CHANNELS},
    )


# Webhooks ---------------------------------------------------------------------------------------


def _endpoint(request, id: str):
    endpoint = selectors.webhook_endpoint_get(organization=request.organization, id=id)
    if endpoint is None:
        raise Http404("No such webhook endpoint")
    return endpoint


@organization_page(scope="org:write")
def webhook_list(request):
    endpoints = selectors.webhook_endpoint_list(organization=request.organization)
    return render(request, "notifications/webhooks.html", {"endpoints": endpoints})


@organization_page(scope="org:write")
@require_http_methods(["GET", "POST"])
def webhook_create(request):
    form = WebhookForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            endpoint, secret = services.webhook_endpoint_create(
                organization=request.organization,
                url=data["url"],
                events=data["events"],
                description=data["description"],
                actor=actor(request),
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            request.session[SECRET_SESSION_KEY] = {str(endpoint.public_id): secret}
            messages.success(request, "Webhook endpoint created.")
            return redirect("webhook-secret", org=request.organization.slug, id=endpoint.public_id)
    return render(request, "notifications/webhook_form.html", {"form": form, "endpoint": None})


@organization_page(scope="org:write")
def webhook_secret(request, id: str):
    """The signing secret, once (taken out of the session as it is shown)."""
    endpoint = _endpoint(request, id)
    secrets = request.session.pop(SECRET_SESSION_KEY, None) or {}
    return render(
        request,
        "notifications/webhook_secret.html",
        {"endpoint": endpoint, "secret": secrets.get(str(endpoint.public_id))},
    )


@organization_page(scope="org:write")
@require_http_methods(["GET", "POST"])
def webhook_edit(request, id: str):
    endpoint = _endpoint(request, id)
    initial = {
        "url": endpoint.url,
        "description": endpoint.description,
        "events": endpoint.event_types,
        "enabled": endpoint.enabled,
    }
    form = WebhookEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            services.webhook_endpoint_update(
                endpoint=endpoint, actor=actor(request), **form.cleaned_data
            )
        except ApplicationError as exc:
            form_errors(form, exc)
        else:
            messages.success(request, "Webhook endpoint saved.")
            return redirect("webhooks", org=request.organization.slug)
    return render(request, "notifications/webhook_form.html", {"form": form, "endpoint": endpoint})


@organization_page(scope="org:write")
@require_http_methods(["GET", "POST"])
def webhook_rotate(request, id: str):
    endpoint = _endpoint(request, id)
    if request.method == "GET":
        return confirm(
            request,
            title="Rotate the signing secret?",
            question=f"A new secret signs every webhook to {endpoint.url} from now on; "
            "the receiver must be given it, the old one stops working at once.",
            action="Rotate the secret",
            cancel=_back(request, "webhooks"),
        )
    try:
        secret = services.webhook_endpoint_rotate_secret(endpoint=endpoint, actor=actor(request))
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect("webhooks", org=request.organization.slug)
    request.session[SECRET_SESSION_KEY] = {str(endpoint.public_id): secret}
    messages.success(request, "Signing secret rotated.")
    return redirect("webhook-secret", org=request.organization.slug, id=endpoint.public_id)


@organization_page(scope="org:write")
@require_http_methods(["GET", "POST"])
def webhook_delete(request, id: str):
    endpoint = _endpoint(request, id)
    back = _back(request, "webhooks")
    if request.method == "GET":
        return confirm(
            request,
            title="Delete the webhook endpoint?",
            question=f"Nothing more is sent to {endpoint.url}; its delivery log goes too.",
            action="Delete the endpoint",
            cancel=back,
        )
    return perform(
        request,
        lambda: services.webhook_endpoint_delete(endpoint=endpoint, actor=actor(request)),
        done="Webhook endpoint deleted.",
        then=back,
    )


@organization_page(scope="org:write")
@require_POST
def webhook_test(request, id: str):
    endpoint = _endpoint(request, id)
    return perform(
        request,
        lambda: services.webhook_endpoint_test(endpoint=endpoint, actor=actor(request)),
        done=lambda m: f"Test event {m.message_id} queued.",
        then=_back(request, "webhook-deliveries", id=endpoint.public_id),
    )


@organization_page(scope="org:write")
def webhook_deliveries(request, id: str):
    endpoint = _endpoint(request, id)
    rows = list(selectors.delivery_list(endpoint=endpoint)[:PAGE_SIZE])
    return render(
        request, "notifications/deliveries.html", {"endpoint": endpoint, "messages_": rows}
    )


@organization_page(scope="org:write")
@require_POST
def webhook_resend(request, id: str, message_id: str):
    endpoint = _endpoint(request, id)
    message = selectors.delivery_get(endpoint=endpoint, message_id=message_id)
    if message is None:
        raise Http404("No such delivery")
    return perform(
        request,
        lambda: services.outbox_message_resend(message=message, actor=actor(request)),
        done=f"{message.message_id} queued again.",
        then=_back(request, "webhook-deliveries", id=endpoint.public_id),
    )
