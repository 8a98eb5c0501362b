-- One event on the hot row: lock the account, append an entry, move the balance, commit.
-- The least any single-event debit of one organization does (run with -c 8).
BEGIN;
SELECT balance FROM bench_limit_account WHERE id = 1 FOR UPDATE;
INSERT INTO bench_limit_entry (account_id, amount) VALUES (1, -0.0012);
UPDATE bench_limit_account SET balance = balance - 0.0012 WHERE id = 1;
COMMIT;
