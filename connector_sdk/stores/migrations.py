"""Schema versions of both store backends, from one list: version N means the same tables on either."""

from __future__ import annotations

from connector_sdk.stores.base import Migration

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="connections, credentials, leases, status history, sync runs and usage rows",
        sqlite="""
            CREATE TABLE connections (
                name TEXT PRIMARY KEY,
                connector TEXT NOT NULL,
                config TEXT NOT NULL,
                credential BLOB,
                state TEXT NOT NULL,
                reason TEXT,
                account TEXT,
                created_at TEXT NOT NULL,
                watermark TEXT,
                last_sync_at TEXT,
                last_success_at TEXT,
                next_sync_at TEXT,
                lease_owner TEXT,
                lease_expires_at TEXT
            );
            CREATE TABLE status_history (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connection TEXT NOT NULL,
                at TEXT NOT NULL,
                old TEXT,
                new TEXT NOT NULL,
                reason TEXT
            );
            CREATE INDEX status_history_connection ON status_history (connection, id);
            CREATE TABLE sync_runs (
                run_id TEXT PRIMARY KEY,
                connection TEXT NOT NULL,
                started_at TEXT NOT NULL,
                finished_at TEXT,
                outcome TEXT NOT NULL,
                window_start TEXT NOT NULL,
                window_end TEXT NOT NULL,
                rows_written INTEGER NOT NULL DEFAULT 0,
                pages INTEGER NOT NULL DEFAULT 0,
                message TEXT
            );
            CREATE INDEX sync_runs_connection ON sync_runs (connection, started_at);
            CREATE TABLE usage_rows (
                row_id TEXT PRIMARY KEY,
                connector TEXT NOT NULL,
                connection TEXT NOT NULL,
                account TEXT NOT NULL,
                period_start TEXT NOT NULL,
                period_end TEXT NOT NULL,
                api_key_id TEXT,
                api_key_label TEXT NOT NULL,
                login_username TEXT,
                model TEXT NOT NULL,
                unit TEXT NOT NULL,
                quantity TEXT NOT NULL,
                unit_price TEXT NOT NULL,
                percent_discount TEXT,
                list_cost TEXT NOT NULL,
                discount TEXT NOT NULL,
                cost TEXT NOT NULL,
                currency TEXT NOT NULL,
                synced_at TEXT NOT NULL
            );
            CREATE INDEX usage_rows_connection_period ON usage_rows (connection, period_start);
        """,
        postgres="""
            CREATE TABLE connections (
                name TEXT PRIMARY KEY,
                connector TEXT NOT NULL,
                config JSONB NOT NULL,
                credential BYTEA,
                state TEXT NOT NULL,
                reason TEXT,
                account TEXT,
                created_at TIMESTAMPTZ NOT NULL,
                watermark TIMESTAMPTZ,
                last_sync_at TIMESTAMPTZ,
                last_success_at TIMESTAMPTZ,
                next_sync_at TIMESTAMPTZ,
                lease_owner TEXT,
                lease_expires_at TIMESTAMPTZ
            );
            CREATE TABLE status_history (
                id BIGSERIAL PRIMARY KEY,
                connection TEXT NOT NULL,
                at TIMESTAMPTZ NOT NULL,
                old TEXT,
                new TEXT NOT NULL,
                reason TEXT
            );
            CREATE INDEX status_history_connection ON status_history (connection, id);
            CREATE TABLE sync_runs (
                run_id TEXT PRIMARY KEY,
                connection TEXT NOT NULL,
                started_at TIMESTAMPTZ NOT NULL,
                finished_at TIMESTAMPTZ,
                outcome TEXT NOT NULL,
                window_start TIMESTAMPTZ NOT NULL,
                window_end TIMESTAMPTZ NOT NULL,
                rows_written INTEGER NOT NULL DEFAULT 0,
                pages INTEGER NOT NULL DEFAULT 0,
                message TEXT
            );
            CREATE INDEX sync_runs_connection ON sync_runs (connection, started_at);
            CREATE TABLE usage_rows (
                row_id TEXT PRIMARY KEY,
                connector TEXT NOT NULL,
                connection TEXT NOT NULL,
                account TEXT NOT NULL,
                period_start TIMESTAMPTZ NOT NULL,
                period_end TIMESTAMPTZ NOT NULL,
                api_key_id TEXT,
                api_key_label TEXT NOT NULL,
                login_username TEXT,
                model TEXT NOT NULL,
                unit TEXT NOT NULL,
                quantity NUMERIC NOT NULL,
                unit_price NUMERIC NOT NULL,
                percent_discount NUMERIC,
                list_cost NUMERIC NOT NULL,
                discount NUMERIC NOT NULL,
                cost NUMERIC NOT NULL,
                currency TEXT NOT NULL,
                synced_at TIMESTAMPTZ NOT NULL
            );
            CREATE INDEX usage_rows_connection_period ON usage_rows (connection, period_start);
        """,
    ),
    Migration(
        version=2,
        description="sinks per connection and the outbox that delivers to them at least once",
        sqlite="""
            CREATE TABLE sinks (
                connection TEXT NOT NULL,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                config TEXT NOT NULL,
                secret BLOB,
                created_at TEXT NOT NULL,
                PRIMARY KEY (connection, name)
            );
            CREATE TABLE outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connection TEXT NOT NULL,
                sink TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_at TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TEXT NOT NULL,
                last_error TEXT
            );
            CREATE INDEX outbox_pending ON outbox (connection, sink, id);
        """,
        postgres="""
            CREATE TABLE sinks (
                connection TEXT NOT NULL,
                name TEXT NOT NULL,
                kind TEXT NOT NULL,
                config JSONB NOT NULL,
                secret BYTEA,
                created_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (connection, name)
            );
            CREATE TABLE outbox (
                id BIGSERIAL PRIMARY KEY,
                connection TEXT NOT NULL,
                sink TEXT NOT NULL,
                payload TEXT NOT NULL,
                created_at TIMESTAMPTZ NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                next_attempt_at TIMESTAMPTZ NOT NULL,
                last_error TEXT
            );
            CREATE INDEX outbox_pending ON outbox (connection, sink, id);
        """,
    ),
    Migration(
        version=3,
        description="budgets, the alerts they fired, and a short-lived cache of vendor prices",
        sqlite="""
            CREATE TABLE budgets (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connection TEXT NOT NULL,
                api_key_label TEXT,
                model TEXT,
                monthly_amount TEXT NOT NULL,
                currency TEXT NOT NULL,
                thresholds TEXT NOT NULL,
                anomaly INTEGER NOT NULL,
                created_at TEXT NOT NULL
            );
            CREATE TABLE alerts (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connection TEXT NOT NULL,
                budget_id INTEGER,
                kind TEXT NOT NULL,
                dedupe_key TEXT NOT NULL UNIQUE,
                fired_at TEXT NOT NULL,
                message TEXT NOT NULL,
                evidence TEXT NOT NULL
            );
            CREATE INDEX alerts_connection ON alerts (connection, id);
            CREATE TABLE price_cache (
                connector TEXT NOT NULL,
                model TEXT NOT NULL,
                unit_price TEXT NOT NULL,
                unit TEXT NOT NULL,
                currency TEXT NOT NULL,
                fetched_at TEXT NOT NULL,
                PRIMARY KEY (connector, model)
            );
        """,
        postgres="""
            CREATE TABLE budgets (
                id BIGSERIAL PRIMARY KEY,
                connection TEXT NOT NULL,
                api_key_label TEXT,
                model TEXT,
                monthly_amount NUMERIC NOT NULL,
                currency TEXT NOT NULL,
                thresholds JSONB NOT NULL,
                anomaly BOOLEAN NOT NULL,
                created_at TIMESTAMPTZ NOT NULL
            );
            CREATE TABLE alerts (
                id BIGSERIAL PRIMARY KEY,
                connection TEXT NOT NULL,
                budget_id BIGINT,
                kind TEXT NOT NULL,
                dedupe_key TEXT NOT NULL UNIQUE,
                fired_at TIMESTAMPTZ NOT NULL,
                message TEXT NOT NULL,
                evidence TEXT NOT NULL
            );
            CREATE INDEX alerts_connection ON alerts (connection, id);
            CREATE TABLE price_cache (
                connector TEXT NOT NULL,
                model TEXT NOT NULL,
                unit_price NUMERIC NOT NULL,
                unit TEXT NOT NULL,
                currency TEXT NOT NULL,
                fetched_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (connector, model)
            );
        """,
    ),
    Migration(
        version=4,
        description="usage rows in (connection, hour) order with integer nano-unit costs, and their daily totals",
        # SQLite: a random row_id as the primary key scattered a backfill's inserts over the whole index; keyed by
        # (connection, period_start, row_id) without a rowid they land in order, and the table is its own index.
        # cost_nanos lets SUM() add costs exactly in C; it is NULL where a cost has more than nine decimals, and
        # those rows are summed as decimals. usage_daily holds the totals per connection, UTC day, label, currency
        # and model, so a report over months reads thousands of totals instead of a million rows. A page marks the
        # days it touched dirty and the end of its run recounts them; until then a report reads those days from
        # their rows. Sums split whole units and nano-units so that no SUM() can overflow.
        sqlite="""
            CREATE TABLE usage_rows_v4 (
                row_id TEXT NOT NULL,
                connector TEXT NOT NULL,
                connection TEXT NOT NULL,
                account TEXT NOT NULL,
                period_start TEXT NOT NULL,
                period_end TEXT NOT NULL,
                api_key_id TEXT,
                api_key_label TEXT NOT NULL,
                login_username TEXT,
                model TEXT NOT NULL,
                unit TEXT NOT NULL,
                quantity TEXT NOT NULL,
                unit_price TEXT NOT NULL,
                percent_discount TEXT,
                list_cost TEXT NOT NULL,
                discount TEXT NOT NULL,
                cost TEXT NOT NULL,
                currency TEXT NOT NULL,
                synced_at TEXT NOT NULL,
                cost_nanos INTEGER,
                PRIMARY KEY (connection, period_start, row_id)
            ) WITHOUT ROWID;
            INSERT INTO usage_rows_v4 SELECT
                row_id, connector, connection, account, period_start, period_end, api_key_id, api_key_label,
                login_username, model, unit, quantity, unit_price, percent_discount, list_cost, discount, cost,
                currency, synced_at, cost_nanos(cost)
                FROM usage_rows;
            DROP TABLE usage_rows;
            ALTER TABLE usage_rows_v4 RENAME TO usage_rows;
            CREATE TABLE usage_daily (
                connection TEXT NOT NULL,
                day TEXT NOT NULL,
                api_key_label TEXT NOT NULL,
                currency TEXT NOT NULL,
                model TEXT NOT NULL,
                row_count INTEGER NOT NULL,
                cost_units INTEGER NOT NULL,
                cost_nanos INTEGER NOT NULL,
                inexact INTEGER NOT NULL,
                PRIMARY KEY (connection, day, api_key_label, currency, model)
            ) WITHOUT ROWID;
            CREATE INDEX usage_daily_day ON usage_daily (day);
            CREATE TABLE usage_daily_dirty (
                connection TEXT NOT NULL,
                day TEXT NOT NULL,
                PRIMARY KEY (connection, day)
            ) WITHOUT ROWID;
            INSERT INTO usage_daily
                SELECT connection, substr(period_start, 1, 10), api_key_label, currency, model, COUNT(*),
                    COALESCE(SUM(cost_nanos / 1000000000), 0), COALESCE(SUM(cost_nanos % 1000000000), 0),
                    COUNT(*) - COUNT(cost_nanos)
                FROM usage_rows GROUP BY 1, 2, 3, 4, 5;
        """,
        # PostgreSQL sums NUMERIC exactly and fast, and its rows are written by COPY: the table stays as it is.
        postgres="COMMENT ON COLUMN usage_rows.cost IS 'exact cost; SUM() over NUMERIC needs no integer copy'",
    ),
    Migration(
        version=5,
        description="an index of the connections that can sync, by their next sync time; runs in start order",
        # The scheduler asks every second which connections are due; with tens of thousands of connections, reading
        # them all to pick the few that are costs a core. The states are the scheduler's RUNNABLE.
        # Runs start to the second, and a retry can start in the second its failed attempt started: SQLite lists
        # such runs by rowid, PostgreSQL by this sequence (it used the random run id, so the two could disagree).
        sqlite="""
            CREATE INDEX connections_due ON connections (next_sync_at) WHERE state IN ('connected', 'error');
        """,
        postgres="""
            CREATE INDEX connections_due ON connections (next_sync_at) WHERE state IN ('connected', 'error');
            ALTER TABLE sync_runs ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY;
        """,
    ),
    Migration(
        version=6,
        description="rows of any vendor: kind (cost or usage), workspace and line item; prices and model nullable",
        # A usage row counts quantities, not money (its cost is NULL), and a vendor may give no model, unit or
        # price: those columns lose NOT NULL. Rows stored before are billed cost, hence the default kind.
        # SQLite cannot drop NOT NULL in place: usage_rows is rebuilt as v4 built it, WITHOUT ROWID and keyed in
        # (connection, period_start) order, with the new columns after the old ones and cost_nanos last.
        # usage_daily holds billed money only (cost rows), now per connector too, so a report across vendors
        # groups by it; a day's totals may have a NULL model or currency, which a primary key cannot hold, so each
        # day's totals are keyed by their position in that day instead.
        sqlite="""
            CREATE TABLE usage_rows_v6 (
                row_id TEXT NOT NULL,
                connector TEXT NOT NULL,
                connection TEXT NOT NULL,
                account TEXT NOT NULL,
                period_start TEXT NOT NULL,
                period_end TEXT NOT NULL,
                api_key_id TEXT,
                api_key_label TEXT NOT NULL,
                login_username TEXT,
                model TEXT,
                unit TEXT,
                quantity TEXT,
                unit_price TEXT,
                percent_discount TEXT,
                list_cost TEXT,
                discount TEXT,
                cost TEXT,
                currency TEXT,
                synced_at TEXT NOT NULL,
                kind TEXT NOT NULL DEFAULT 'cost',
                workspace_id TEXT,
                workspace_name TEXT,
                line_item TEXT,
                cost_nanos INTEGER,
                PRIMARY KEY (connection, period_start, row_id)
            ) WITHOUT ROWID;
            INSERT INTO usage_rows_v6 SELECT
                row_id, connector, connection, account, period_start, period_end, api_key_id, api_key_label,
                login_username, model, unit, quantity, unit_price, percent_discount, list_cost, discount, cost,
                currency, synced_at, 'cost', NULL, NULL, NULL, cost_nanos
                FROM usage_rows;
            DROP TABLE usage_rows;
            ALTER TABLE usage_rows_v6 RENAME TO usage_rows;
            DROP TABLE usage_daily;
            CREATE TABLE usage_daily (
                connection TEXT NOT NULL,
                day TEXT NOT NULL,
                n INTEGER NOT NULL,
                connector TEXT NOT NULL,
                api_key_label TEXT NOT NULL,
                currency TEXT,
                model TEXT,
                row_count INTEGER NOT NULL,
                cost_units INTEGER NOT NULL,
                cost_nanos INTEGER NOT NULL,
                inexact INTEGER NOT NULL,
                PRIMARY KEY (connection, day, n)
            ) WITHOUT ROWID;
            CREATE INDEX usage_daily_day ON usage_daily (day);
            INSERT INTO usage_daily
                SELECT connection, substr(period_start, 1, 10),
                    ROW_NUMBER() OVER (PARTITION BY connection, substr(period_start, 1, 10)),
                    connector, api_key_label, currency, model, COUNT(*),
                    COALESCE(SUM(cost_nanos / 1000000000), 0), COALESCE(SUM(cost_nanos % 1000000000), 0),
                    COUNT(*) - COUNT(cost_nanos)
                FROM usage_rows WHERE kind = 'cost' GROUP BY connection, 2, connector, api_key_label, currency, model
        """,
        postgres="""
            ALTER TABLE usage_rows
                ADD COLUMN kind TEXT NOT NULL DEFAULT 'cost',
                ADD COLUMN workspace_id TEXT,
                ADD COLUMN workspace_name TEXT,
                ADD COLUMN line_item TEXT,
                ALTER COLUMN model DROP NOT NULL,
                ALTER COLUMN unit DROP NOT NULL,
                ALTER COLUMN quantity DROP NOT NULL,
                ALTER COLUMN unit_price DROP NOT NULL,
                ALTER COLUMN list_cost DROP NOT NULL,
                ALTER COLUMN discount DROP NOT NULL,
                ALTER COLUMN cost DROP NOT NULL,
                ALTER COLUMN currency DROP NOT NULL;
        """,
    ),
    Migration(
        version=7,
        description="a connector's own state per connection (a page size the vendor accepted, say)",
        sqlite="ALTER TABLE connections ADD COLUMN connector_state TEXT;",
        postgres="ALTER TABLE connections ADD COLUMN connector_state JSONB;",
    ),
    Migration(
        version=8,
        description="the key inventory (listed keys, listings, key history, first and last use) and findings",
        # api_keys holds what the last listing said of each key a listing ever named; a key that leaves the listing
        # keeps its row with gone_at set, and key_events keeps every change, never deleted (only a purge does):
        # that history is the evidence behind findings. key_usage is when rows first and last named a key (any
        # row kind), kept per page so the inventory never scans a connection's history; it starts from the rows
        # stored before. At most one open finding per (connection, kind, subject): a partial unique index. Evidence
        # is JSON text on both backends, kept as written, like an alert's. SQLite's daily totals gain the key id and
        # the person, so spend per key per day (every sync's findings, the inventory, the overview) never scans rows.
        sqlite="""
            DROP TABLE usage_daily;
            CREATE TABLE usage_daily (
                connection TEXT NOT NULL,
                day TEXT NOT NULL,
                n INTEGER NOT NULL,
                connector TEXT NOT NULL,
                api_key_label TEXT NOT NULL,
                api_key_id TEXT,
                login_username TEXT,
                currency TEXT,
                model TEXT,
                row_count INTEGER NOT NULL,
                cost_units INTEGER NOT NULL,
                cost_nanos INTEGER NOT NULL,
                inexact INTEGER NOT NULL,
                PRIMARY KEY (connection, day, n)
            ) WITHOUT ROWID;
            CREATE INDEX usage_daily_day ON usage_daily (day);
            INSERT INTO usage_daily
                SELECT connection, substr(period_start, 1, 10),
                    ROW_NUMBER() OVER (PARTITION BY connection, substr(period_start, 1, 10)),
                    connector, api_key_label, api_key_id, login_username, currency, model, COUNT(*),
                    COALESCE(SUM(cost_nanos / 1000000000), 0), COALESCE(SUM(cost_nanos % 1000000000), 0),
                    COUNT(*) - COUNT(cost_nanos)
                FROM usage_rows WHERE kind = 'cost'
                GROUP BY connection, 2, connector, api_key_label, api_key_id, login_username, currency, model;
            CREATE TABLE api_keys (
                connection TEXT NOT NULL,
                key_id TEXT NOT NULL,
                name TEXT,
                scope TEXT,
                owner TEXT,
                owner_email TEXT,
                owner_type TEXT,
                owner_active INTEGER,
                workspace_id TEXT,
                workspace_name TEXT,
                created_at TEXT,
                last_used_at TEXT,
                status TEXT,
                listing TEXT NOT NULL,
                first_listed_at TEXT NOT NULL,
                last_listed_at TEXT NOT NULL,
                gone_at TEXT,
                PRIMARY KEY (connection, key_id)
            );
            CREATE TABLE key_listings (
                connection TEXT PRIMARY KEY,
                first_listed_at TEXT NOT NULL,
                last_listed_at TEXT NOT NULL,
                listings INTEGER NOT NULL
            );
            CREATE TABLE key_events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connection TEXT NOT NULL,
                key_id TEXT NOT NULL,
                at TEXT NOT NULL,
                event TEXT NOT NULL,
                detail TEXT NOT NULL
            );
            CREATE INDEX key_events_key ON key_events (connection, key_id, id);
            CREATE TABLE key_usage (
                connection TEXT NOT NULL,
                key_id TEXT NOT NULL,
                first_usage_at TEXT NOT NULL,
                last_usage_at TEXT NOT NULL,
                PRIMARY KEY (connection, key_id)
            );
            INSERT INTO key_usage (connection, key_id, first_usage_at, last_usage_at)
                SELECT connection, api_key_id, MIN(period_start), MAX(period_start) FROM usage_rows
                WHERE api_key_id IS NOT NULL GROUP BY connection, api_key_id;
            CREATE TABLE findings (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                connection TEXT NOT NULL,
                connector TEXT NOT NULL,
                kind TEXT NOT NULL,
                subject TEXT NOT NULL,
                subject_label TEXT NOT NULL,
                severity TEXT NOT NULL,
                message TEXT NOT NULL,
                evidence TEXT NOT NULL,
                opened_at TEXT NOT NULL,
                updated_at TEXT,
                resolved_at TEXT,
                acknowledged_at TEXT,
                ack_note TEXT
            );
            CREATE UNIQUE INDEX findings_open ON findings (connection, kind, subject) WHERE resolved_at IS NULL;
            CREATE INDEX findings_connection ON findings (connection, id);
        """,
        postgres="""
            CREATE TABLE api_keys (
                connection TEXT NOT NULL,
                key_id TEXT NOT NULL,
                name TEXT,
                scope TEXT,
                owner TEXT,
                owner_email TEXT,
                owner_type TEXT,
                owner_active BOOLEAN,
                workspace_id TEXT,
                workspace_name TEXT,
                created_at TIMESTAMPTZ,
                last_used_at TIMESTAMPTZ,
                status TEXT,
                listing TEXT NOT NULL,
                first_listed_at TIMESTAMPTZ NOT NULL,
                last_listed_at TIMESTAMPTZ NOT NULL,
                gone_at TIMESTAMPTZ,
                PRIMARY KEY (connection, key_id)
            );
            CREATE TABLE key_listings (
                connection TEXT PRIMARY KEY,
                first_listed_at TIMESTAMPTZ NOT NULL,
                last_listed_at TIMESTAMPTZ NOT NULL,
                listings INTEGER NOT NULL
            );
            CREATE TABLE key_events (
                id BIGSERIAL PRIMARY KEY,
                connection TEXT NOT NULL,
                key_id TEXT NOT NULL,
                at TIMESTAMPTZ NOT NULL,
                event TEXT NOT NULL,
                detail TEXT NOT NULL
            );
            CREATE INDEX key_events_key ON key_events (connection, key_id, id);
            CREATE TABLE key_usage (
                connection TEXT NOT NULL,
                key_id TEXT NOT NULL,
                first_usage_at TIMESTAMPTZ NOT NULL,
                last_usage_at TIMESTAMPTZ NOT NULL,
                PRIMARY KEY (connection, key_id)
            );
            INSERT INTO key_usage (connection, key_id, first_usage_at, last_usage_at)
                SELECT connection, api_key_id, MIN(period_start), MAX(period_start) FROM usage_rows
                WHERE api_key_id IS NOT NULL GROUP BY connection, api_key_id;
            CREATE TABLE findings (
                id BIGSERIAL PRIMARY KEY,
                connection TEXT NOT NULL,
                connector TEXT NOT NULL,
                kind TEXT NOT NULL,
                subject TEXT NOT NULL,
                subject_label TEXT NOT NULL,
                severity TEXT NOT NULL,
                message TEXT NOT NULL,
                evidence TEXT NOT NULL,
                opened_at TIMESTAMPTZ NOT NULL,
                updated_at TIMESTAMPTZ,
                resolved_at TIMESTAMPTZ,
                acknowledged_at TIMESTAMPTZ,
                ack_note TEXT
            );
            CREATE UNIQUE INDEX findings_open ON findings (connection, kind, subject) WHERE resolved_at IS NULL;
            CREATE INDEX findings_connection ON findings (connection, id);
        """,
    ),
    Migration(
        version=9,
        description="the daily totals in the report's order, and the connections by account",
        # A report groups the daily totals by connector, label, currency and model: over 90 days of a busy account
        # that is 100k totals to sort, 0.2 s, where a scan of them takes 0.02 s. This index holds them in that
        # order, with every figure the report adds (a covering index), so it reads them in order and sorts nothing.
        # PostgreSQL keeps no daily totals (it sums the rows' NUMERIC costs). Every sync's findings read the other
        # connections to its account (a second connection to one account), by connector and account.
        sqlite="""
            CREATE INDEX usage_daily_report ON usage_daily (
                connection, connector, api_key_label, currency, model, day, row_count, cost_units, cost_nanos, inexact
            );
            CREATE INDEX connections_account ON connections (connector, account);
        """,
        postgres="CREATE INDEX connections_account ON connections (connector, account);",
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version
