-- bench/schema.sql: the raw-database baseline tables for pgbench (scripts/bench).
-- pgb_session and pgb_report have the shape of sessionkeeper's `session` and `report` tables
-- (same columns, primary keys, secondary indexes and autovacuum settings), so pgbench measures
-- the same index maintenance and row width as the service. Run with psql -v keys=N.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
DROP TABLE IF EXISTS pgb_session, pgb_report;
CREATE TABLE pgb_session (LIKE session INCLUDING ALL);
ALTER TABLE pgb_session SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
CREATE TABLE pgb_report (LIKE report INCLUDING ALL);
-- The same rows the service holds after seeding: namespace bench, agent coder, c-0 … c-<keys-1>.
INSERT INTO pgb_session (namespace, agent, conversation, session_id, provider, host, config_dir, cwd,
                         last_used_at, failure_count)
SELECT 'bench', 'coder', 'c-' || g, '00000000-0000-4000-8000-' || lpad(g::text, 12, '0'), 'claude',
       'bench-worker-1', '/home/agent/.claude', '/work/c-' || g, now(), 0
FROM generate_series(0, :keys - 1) AS g;
VACUUM (ANALYZE) pgb_session;
ANALYZE pgb_report;
