-- 100 entries in one transaction on the same account row (run with -c 4): the least a batch
-- of 100 events does, counted as 100 events per transaction.
BEGIN;
SELECT balance FROM bench_limit_account WHERE id = 1 FOR UPDATE;
INSERT INTO bench_limit_entry (account_id, amount)
    SELECT 1, -0.0012 FROM generate_series(1, 100);
UPDATE bench_limit_account SET balance = balance - 0.12 WHERE id = 1;
COMMIT;
