"""URLs of billing: `api_patterns` (under `/api/v1/`, included by `portal.urls`) and
`urlpatterns`, the pages under `/o/<org-slug>/` (`billing/...`).

Each feature keeps its entries in its own block."""

from django.urls import path

from . import apis_orders, views_orders

api_patterns = [
    # Purchases (orders, providers' webhooks)
    path("credits/purchase", apis_orders.PurchaseApi.as_view(), name="credits-purchase"),
    path("billing/orders", apis_orders.OrderListApi.as_view(), name="billing-orders"),
    path("billing/orders/<uuid:id>", apis_orders.OrderDetailApi.as_view(), name="billing-order"),
    path(
        "billing/webhooks/stripe",
        apis_orders.StripeWebhookApi.as_view(),
        name="billing-webhook-stripe",
    ),
    path(
        "billing/webhooks/coinbase",
        apis_orders.CoinbaseWebhookApi.as_view(),
        name="billing-webhook-coinbase",
    ),
]

urlpatterns = [
    # Purchases
    path("billing/buy/", views_orders.buy, name="billing-buy"),
    path("billing/orders/", views_orders.orders, name="billing-orders"),
    path("billing/orders/<uuid:id>/", views_orders.order, name="billing-order"),
    path(
        "billing/orders/<uuid:id>/confirm/",
        views_orders.order_confirm,
        name="billing-order-confirm",
    ),
]
