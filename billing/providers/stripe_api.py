"""The Stripe client of the portal: the official `stripe` library on its httpx client, pointed at
`STRIPE_API_BASE` (Stripe's API by default; a loopback server speaking Stripe's contract in
tests), with a per-request timeout and the library's own network retries (it retries connection
errors, 409 lock timeouts and 5xx with idempotency keys; Stripe docs, "Error handling").
"""

from __future__ import annotations

import stripe
from django.conf import settings

from portal.errors import ValidationFailed

from . import ProviderUnavailable


def stripe_client() -> stripe.StripeClient:
    """A StripeClient for the configured account. Raises ProviderUnavailable when Stripe is not
    configured (no STRIPE_SECRET_KEY)."""
    if not settings.STRIPE_SECRET_KEY:
        raise ProviderUnavailable("Card payments are not configured (STRIPE_SECRET_KEY).")
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": settings.STRIPE_API_BASE},
        # allow_sync_methods: without it the library's httpx client refuses synchronous calls
        http_client=stripe.HTTPXClient(
            timeout=settings.PAYMENT_PROVIDER_TIMEOUT_SECONDS, allow_sync_methods=True
        ),
        max_network_retries=settings.PAYMENT_PROVIDER_RETRIES,
    )


def stripe_call(call, *args, **kwargs):
    """Run one Stripe API call; a network failure, timeout, rate limit or 5xx becomes
    ProviderUnavailable, a request Stripe refuses (4xx: a bad parameter) ValidationFailed,
    and a card error (402) is re-raised as `stripe.CardError` for the caller to record."""
    try:
        return call(*args, **kwargs)
    except stripe.CardError:
        raise
    except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
        raise ProviderUnavailable(f"Stripe is unreachable: {exc.user_message or exc}") from None
    except stripe.InvalidRequestError as exc:
        message = f"Stripe refused the request: {exc.user_message or exc}"
        raise ValidationFailed({"provider": [message]}) from None
    except stripe.StripeError as exc:
        raise ProviderUnavailable(f"Stripe answered an error: {exc.user_message or exc}") from None
