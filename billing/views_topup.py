"""The automatic top-up page (`/o/<org>/billing/topup/`): the rule, the saved card, this month's
use of the cap, the attempts, and the approval of a top-up that waits for it. Billing members,
owners and admins see it (`billing:read`); `billing:write` (billing members and owners) changes
the rule, saves a card and approves or rejects. Writes go through `billing.services.topup`, as
`/api/v1/billing/topup` does."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from django.contrib import messages
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from accounts.forms import form_errors
from accounts.pages import actor, confirm, organization_page, perform
from credits.periods import window_bounds
from portal.errors import ApplicationError, PermissionDenied

from .apis_topup import topup_return_url
from .forms_topup import TopUpRuleForm
from .models import TopUp, TopUpRule
from .services import topup as services
from .services.documents import billing_profile_of

ATTEMPTS_SHOWN = 25


def _back(request) -> str:
    return reverse("billing-topup", kwargs={"org": request.organization.slug})


def _writer(request) -> None:
    if not request.principal.has("billing:write"):
        raise PermissionDenied("Changing automatic top-up needs the billing:write scope.")


def _initial(rule: TopUpRule | None) -> dict:
    if rule is None:
        return {"mode": "amount", "enabled": False}
    return {
        "enabled": rule.enabled,
        "threshold": rule.threshold,
        "mode": "amount" if rule.amount is not None else "target",
        "amount": rule.amount,
        "target_balance": rule.target_balance,
        "monthly_cap": rule.monthly_cap,
        "requires_approval": rule.requires_approval,
    }


def _when(moment, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") if moment else ""


@organization_page(scope="billing:read")
@require_http_methods(["GET", "POST"])
def topup(request):
    organization = request.organization
    may_write = request.principal.has("billing:write")
    session_id = request.GET.get("session_id")
    if request.method == "GET" and session_id:  # back from Stripe's setup Checkout
        return perform(
            request,
            lambda: (
                _writer(request),
                services.topup_card_save(
                    organization=organization, session_id=session_id, actor=actor(request)
                ),
            ),
            done="Card saved for automatic top-ups.",
            then=_back(request),
        )
    rule = TopUpRule.objects.filter(organization=organization).first()
    form = TopUpRuleForm(request.POST or None, initial=_initial(rule))
    if request.method == "POST":
        if not may_write:
            messages.error(request, "Changing automatic top-up needs the billing:write scope.")
            return redirect(_back(request))
        if form.is_valid():
            try:
                services.topup_rule_set(
                    organization=organization,
                    data=services.RuleInput(**form.rule_values()),
                    actor=actor(request),
                )
            except ApplicationError as exc:
                form_errors(form, exc)
            else:
                messages.success(request, "Automatic top-up saved.")
                return redirect(_back(request))
    zone = ZoneInfo(organization.time_zone)
    now = timezone.now()
    attempts = [
        {"topup": t, "created": _when(t.created_at, zone)}
        for t in TopUp.objects.filter(organization=organization).select_related("order")[
            :ATTEMPTS_SHOWN
        ]
    ]
    profile = billing_profile_of(organization)
    return render(
        request,
        "billing/topup.html",
        {
            "rule": rule,
            "form": form if may_write else None,
            "may_write": may_write,
            "card_saved": bool(profile.stripe_payment_method_id),
            "month_charged": services.month_charged(organization, now),
            "month_start": _when(window_bounds("monthly", now, organization.time_zone)[0], zone),
            "next_attempt": _when(rule.next_attempt_at, zone)
            if rule and rule.next_attempt_at and rule.next_attempt_at > now
            else "",
            "attempts": attempts,
            "time_zone": organization.time_zone,
        },
        status=400 if request.method == "POST" else 200,
    )


@organization_page(scope="billing:read")
@require_POST
def topup_card(request):
    """Start saving a card: off to Stripe's setup Checkout, which sends the member back to the
    top-up page with the session id."""
    if not request.principal.has("billing:write"):
        messages.error(request, "Saving a card needs the billing:write scope.")
        return redirect(_back(request))
    back = topup_return_url(request.organization)
    try:
        _, url = services.topup_card_checkout(
            organization=request.organization,
            success_url=back + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=back,
            actor=actor(request),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
        return redirect(_back(request))
    return HttpResponseRedirect(url)


def _waiting(request, id) -> TopUp:
    found = (
        TopUp.objects.filter(organization=request.organization, order__public_id=id)
        .select_related("order")
        .first()
    )
    if found is None:
        raise Http404("No such top-up")
    return found


@organization_page(scope="billing:read")
@require_POST
def topup_approve(request, id):
    found = _waiting(request, id)
    return perform(
        request,
        lambda: (_writer(request), services.topup_approve(topup=found, actor=actor(request))),
        done=f"Top-up of {found.order.amount} credits approved: the card is being charged.",
        then=_back(request),
    )


@organization_page(scope="billing:read")
@require_http_methods(["GET", "POST"])
def topup_reject(request, id):
    found = _waiting(request, id)
    if request.method == "GET":
        if (
            not request.principal.has("billing:write")
            or found.state != TopUp.State.AWAITING_APPROVAL
        ):
            raise Http404("No such top-up awaiting approval")
        return confirm(
            request,
            title="Reject the top-up?",
            question=f"Reject the automatic top-up of {found.order.amount} credits "
            f"({found.order.total} {found.order.currency})? Nothing is charged, and the rule "
            "waits before it asks again.",
            action="Reject the top-up",
            cancel=_back(request),
        )
    return perform(
        request,
        lambda: (_writer(request), services.topup_reject(topup=found, actor=actor(request))),
        done="Top-up rejected.",
        then=_back(request),
    )
