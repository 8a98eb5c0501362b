"""Payment providers, each behind the official client or its documented HTTP contract.

- `stripe`: the official `stripe` library (its httpx client): Checkout Sessions, PaymentIntents,
  refunds, webhook signatures.
- `coinbase`: Coinbase Commerce's REST API over httpx: charges and webhook signatures.
- `manual`: bank transfer, confirmed by a billing member in the portal.

Provider errors surface as `ProviderUnavailable` (503, `provider_unavailable`): a timeout, a 5xx
or a refused connection, after the client's retries.
"""

from portal.errors import ApplicationError


class ProviderUnavailable(ApplicationError):
    """503: the payment provider did not answer in time or answered with an error."""

    status_code = 503
    type = "provider_unavailable"


class WebhookInvalid(Exception):
    """A webhook request that is not a verified event of the provider: no or a wrong signature,
    a timestamp outside the tolerance, a body that is not a JSON object. Answered 400; nothing
    is stored."""
