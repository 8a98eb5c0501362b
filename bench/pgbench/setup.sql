-- The scratch pair of the physical limits (bench/limits.py): an account row and an entries
-- table, shaped like credits_ledgeraccount and credits_ledgerentry (bigint ids, numeric
-- amounts, a timestamp, an index on the account), without the portal's triggers.
DROP TABLE IF EXISTS bench_limit_entry;
DROP TABLE IF EXISTS bench_limit_account;
CREATE TABLE bench_limit_account (
    id bigint PRIMARY KEY,
    balance numeric(28, 12) NOT NULL
);
CREATE TABLE bench_limit_entry (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES bench_limit_account (id),
    amount numeric(28, 12) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bench_limit_entry_account ON bench_limit_entry (account_id, created_at);
INSERT INTO bench_limit_account VALUES (1, 1000000000);
