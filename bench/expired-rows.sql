-- bench/expired-rows.sql: N expired sessions for the sweep and startup benchmarks (psql -v rows=N).
-- Two days old, past the default 24 h TTL; conversations x-1 … x-N, so the seeded c-* rows stay.
-- One INSERT … SELECT generate_series, then VACUUM (ANALYZE), as a table whose rows expired
-- over a day would look.
\set ON_ERROR_STOP on
INSERT INTO session (namespace, agent, conversation, session_id, provider, host, config_dir, cwd,
                     last_used_at, failure_count)
SELECT 'bench', 'coder', 'x-' || g, md5(g::text), 'claude', 'bench-worker-1', '/home/agent/.claude',
       '/work/x-' || g, now() - interval '2 days' - g * interval '1 millisecond', 0
FROM generate_series(1, :rows) AS g
ON CONFLICT DO NOTHING;
VACUUM (ANALYZE) session;
SELECT count(*) AS expired_rows FROM session WHERE last_used_at < now() - interval '24 hours';
