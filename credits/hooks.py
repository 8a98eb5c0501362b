"""Hooks for apps above `credits` (imports point one way: `billing` registers here, `credits`
never imports it).

`after_pool_change(callback)` registers `callback(organization_id, available)`, called after the
commit of every transaction that locked an organization's pool account to change it (a debit, a
capture, a hold, an allocation, an expiry, a grant), with the pool's available credits
(balance - held, `Decimal`) as that transaction left them. It costs the write path no statement:
the figure is the locked row's, kept current in memory by the posting primitives; with no
callback registered nothing at all is done. Callbacks run with `transaction.on_commit(...,
robust=True)`: one that raises is logged and never fails the committed write. A callback must be
cheap (billing's reads a cached threshold, `billing.services.topup.topup_pool_changed`).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from django.db import transaction

PoolCallback = Callable[[int, Decimal], None]
_pool_callbacks: list[PoolCallback] = []


def after_pool_change(callback: PoolCallback) -> PoolCallback:
    """Register `callback(organization_id, available)` (idempotent; an AppConfig.ready calls it)."""
    if callback not in _pool_callbacks:
        _pool_callbacks.append(callback)
    return callback


def pool_locked(account) -> None:
    """Called by `ledger_core._lock` for a locked pool row: after commit, tell the callbacks the
    pool's available credits as the transaction left the row (read when the callback runs)."""
    if not _pool_callbacks:
        return
    organization_id = account.organization_id

    def tell() -> None:
        available = account.balance - account.held
        for callback in list(_pool_callbacks):
            callback(organization_id, available)

    transaction.on_commit(tell, robust=True)
