//! The schema, as numbered migrations the component applies itself: the first
//! request, timer firing or job of a new version checks `igny8_migrations` and
//! runs what is missing (`guest_kit::postgres::migrate`: one transaction under
//! an advisory lock, so two hosts starting together apply each migration once).
//!
//! Tables follow the seed's models: `AutomationRule` (002 §5.2), the credit
//! tables `CreditUsageLog` / `CreditTransaction` (002 §10.5), sites with their
//! WordPress URL and credentials (003 "WordPress Integration").

use guest_kit::postgres as pg;

const MIGRATIONS: &[&str] = &[
    // 1: accounts, sites, rules, runs, content, the credit ledger.
    "CREATE TABLE accounts (
        id serial PRIMARY KEY,
        name text NOT NULL,
        credits integer NOT NULL CHECK (credits >= 0),
        monthly_credits integer NOT NULL DEFAULT 0 CHECK (monthly_credits >= 0));
    CREATE TABLE sites (
        id serial PRIMARY KEY,
        account_id integer NOT NULL REFERENCES accounts(id),
        name text NOT NULL,
        wp_url text NOT NULL CHECK (wp_url ~ '^https?://'),
        wp_username text NOT NULL DEFAULT '',
        wp_app_password text NOT NULL DEFAULT '');
    CREATE TABLE automation_rules (
        id serial PRIMARY KEY,
        site_id integer NOT NULL REFERENCES sites(id),
        name text NOT NULL,
        trigger text NOT NULL,
        conditions jsonb NOT NULL DEFAULT '{}',
        actions jsonb NOT NULL,
        schedule jsonb NOT NULL DEFAULT '{}',
        is_active boolean NOT NULL DEFAULT true,
        max_executions_per_day integer NOT NULL DEFAULT 10,
        credit_limit_per_execution integer NOT NULL DEFAULT 100,
        created_ms bigint NOT NULL);
    CREATE TABLE rule_runs (
        id bigserial PRIMARY KEY,
        rule_id integer NOT NULL REFERENCES automation_rules(id),
        slot_ms bigint NOT NULL,
        run_day date NOT NULL,
        source text NOT NULL,
        status text NOT NULL,
        credits_used integer NOT NULL DEFAULT 0,
        task_id bigint,
        error text,
        created_ms bigint NOT NULL,
        UNIQUE (rule_id, slot_ms));
    CREATE INDEX rule_runs_day ON rule_runs (rule_id, run_day);
    CREATE TABLE contents (
        id bigserial PRIMARY KEY,
        site_id integer NOT NULL REFERENCES sites(id),
        run_id bigint NOT NULL REFERENCES rule_runs(id),
        action_index integer NOT NULL,
        kind text NOT NULL,
        title text NOT NULL,
        body text NOT NULL,
        word_count integer NOT NULL,
        status text NOT NULL DEFAULT 'draft',
        wp_post_id bigint,
        created_ms bigint NOT NULL,
        UNIQUE (run_id, action_index));
    CREATE TABLE credit_usage_log (
        id bigserial PRIMARY KEY,
        account_id integer NOT NULL REFERENCES accounts(id),
        operation_type text NOT NULL,
        credits_used integer NOT NULL,
        related_object_type text NOT NULL,
        related_object_id bigint NOT NULL,
        metadata jsonb NOT NULL DEFAULT '{}',
        created_ms bigint NOT NULL);
    CREATE TABLE credit_transactions (
        id bigserial PRIMARY KEY,
        account_id integer NOT NULL REFERENCES accounts(id),
        transaction_type text NOT NULL,
        amount integer NOT NULL,
        description text NOT NULL,
        period text,
        created_ms bigint NOT NULL);
    CREATE UNIQUE INDEX credit_replenishment_once ON credit_transactions (account_id, period)
        WHERE transaction_type = 'replenishment';
    CREATE TABLE notifications (
        id bigserial PRIMARY KEY,
        account_id integer NOT NULL REFERENCES accounts(id),
        kind text NOT NULL,
        period text NOT NULL,
        message text NOT NULL,
        created_ms bigint NOT NULL,
        UNIQUE (account_id, kind, period));
    CREATE TABLE site_health (
        site_id integer PRIMARY KEY REFERENCES sites(id),
        contents integer NOT NULL,
        published integer NOT NULL,
        failed_runs_7d integer NOT NULL,
        checked_ms bigint NOT NULL)",
];

/// Applies the migrations this database has not seen yet.
pub fn migrate() -> Result<(), pg::Error> {
    pg::migrate("igny8_migrations", MIGRATIONS)
}
