"""Pages of purchases under `/o/<org>/billing/`: buy credits (packs, a custom amount, the
provider) which redirects to the provider's checkout; the orders and each order's page (its
status refreshed by htmx while pending; bank-transfer instructions); the confirmation of a bank
transfer by a billing member.

Who: reading needs `billing:read` (owners, admins, billing members), buying and confirming
`billing:write` (owners, billing members); others get 404, as the API answers them nothing.
The writes are the API's services (`billing.services.payments`)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from accounts.forms import form_errors
from accounts.pages import actor, confirm, organization_page, perform
from portal.errors import ApplicationError, NotFound, ValidationFailed

from . import selectors_orders as selectors
from .forms_orders import CUSTOM, BuyForm
from .models import Order
from .services import payments

ORDERS_PER_PAGE = 100


def _order(request, id) -> Order:
    try:
        return selectors.order_get(organization=request.organization, public_id=id)
    except NotFound:
        raise Http404("No such order") from None


def _on_amount_field(exc: ApplicationError, form: BuyForm) -> ApplicationError:
    """The service's `amount` errors shown on the field the amount came from."""
    errors = exc.metadata.get("errors") if isinstance(exc, ValidationFailed) else None
    if not errors or "amount" not in errors:
        return exc
    field = "custom_amount" if form.cleaned_data.get("pack") == CUSTOM else "pack"
    return ValidationFailed({(field if k == "amount" else k): v for k, v in errors.items()})


@organization_page(scope="billing:write")
@require_http_methods(["GET", "POST"])
def buy(request):
    form = BuyForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            order, _ = payments.purchase_start(
                organization=request.organization,
                amount=form.cleaned_data["amount"],
                provider=form.cleaned_data["provider"],
                actor=actor(request),
            )
        except ApplicationError as exc:
            form_errors(form, _on_amount_field(exc, form))
        else:
            if order.provider != Order.Provider.MANUAL:
                return redirect(order.checkout_url)  # the provider's checkout page
            messages.success(request, "Order created: pay it by bank transfer as shown below.")
            return redirect("billing-order", org=request.organization.slug, id=order.public_id)
    return render(request, "billing/buy.html", {"form": form})


@organization_page(scope="billing:read")
@require_http_methods(["GET"])
def orders(request):
    rows = list(selectors.orders_of(request.organization)[:ORDERS_PER_PAGE])
    return render(
        request,
        "billing/orders.html",
        {"orders": rows, "may_buy": request.principal.has("billing:write")},
    )


@organization_page(scope="billing:read")
@require_http_methods(["GET"])
def order(request, id):
    found = _order(request, id)
    context = {
        "order": found,
        "checkout": request.GET.get("checkout", ""),
        "may_confirm": request.principal.has("billing:write")
        and found.provider == Order.Provider.MANUAL
        and found.status == Order.Status.PENDING,
        "instructions": settings.BILLING_BANK_TRANSFER_INSTRUCTIONS,
        "seller": settings.BILLING_SELLER,
    }
    template = "billing/order.html#status" if request.htmx else "billing/order.html"
    return render(request, template, context)


@organization_page(scope="billing:write")
@require_http_methods(["GET", "POST"])
def order_confirm(request, id):
    found = _order(request, id)
    back = reverse("billing-order", kwargs={"org": request.organization.slug, "id": id})
    if request.method == "GET":
        return confirm(
            request,
            title="Confirm the bank transfer",
            question=f"Has the transfer of {found.total} {found.currency} for order "
            f"{found.public_id} arrived? Confirming grants {found.amount} credits and issues "
            "the paid invoice. This cannot be undone.",
            action="Yes, the money has arrived",
            cancel=back,
            danger=False,
        )
    return perform(
        request,
        lambda: payments.manual_payment_confirm(order=found, actor=actor(request)),
        done=lambda result: (
            "Payment confirmed: the credits are granted."
            if result[1]
            else "This order was paid already."
        ),
        then=back,
    )
