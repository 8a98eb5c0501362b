"""Every write of the credits app (see the modules for the rules)."""

from .ledger import (  # noqa: F401
    HoldNotPending,
    credits_allocate,
    credits_grant,
    credits_reclaim,
    hold_authorize,
    hold_capture,
    hold_void,
    holds_expire,
    ledger_debit,
    ledger_reverse,
    lots_expire,
    spending_account,
    system_account,
    team_account,
)
from .prices import cost_compute, price_for, prices_load  # noqa: F401
from .usage import (  # noqa: F401
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    usage_record,
    usage_record_many,
)
