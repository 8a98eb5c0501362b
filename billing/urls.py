"""URLs of billing: `api_patterns` (under `/api/v1/`, included by `portal.urls`) and
`urlpatterns`, the pages under `/o/<org-slug>/` (`billing/...`).

Each feature keeps its entries in its own block."""

from django.urls import path

from . import apis_orders, apis_sync, views_orders, views_sync

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
    # The OpenRouter credit sync
    path(
        "billing/openrouter", apis_sync.OpenRouterConnectionApi.as_view(), name="billing-openrouter"
    ),
    path(
        "billing/openrouter/sync",
        apis_sync.OpenRouterSyncApi.as_view(),
        name="billing-openrouter-sync",
    ),
    path(
        "billing/openrouter/snapshots",
        apis_sync.OpenRouterSnapshotListApi.as_view(),
        name="billing-openrouter-snapshots",
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
    # The OpenRouter credit sync (upstream sync)
    path("billing/openrouter/", views_sync.openrouter_page, name="billing-openrouter"),
    path(
        "billing/openrouter/connection/",
        views_sync.openrouter_connection,
        name="billing-openrouter-connection",
    ),
    path(
        "billing/openrouter/sync/", views_sync.openrouter_sync_now, name="billing-openrouter-sync"
    ),
    path(
        "billing/openrouter/disconnect/",
        views_sync.openrouter_disconnect,
        name="billing-openrouter-disconnect",
    ),
]
