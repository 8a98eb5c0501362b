"""Every write of the credits app (see the modules for the rules)."""

from .holds import (  # noqa: F401
    HoldNotPending,
    hold_authorize,
    hold_capture,
    hold_void,
    holds_expire,
)
from .ledger import (  # noqa: F401
    credits_allocate,
    credits_grant,
    credits_reclaim,
    ledger_debit,
    ledger_reverse,
    lots_expire,
)
from .ledger_core import spending_account, system_account, team_account  # noqa: F401
from .prices import cost_compute, price_for, prices_load  # noqa: F401
from .usage import (  # noqa: F401
    Attribution,
    UsageInput,
    authorization_capture,
    authorization_create,
    usage_record,
    usage_record_many,
)
