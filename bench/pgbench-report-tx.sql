-- Not a target baseline: the exact statement sequence of one ReportResult with a report_id
-- (src/store/postgres.rs PostgresStore::report, SUCCESS path), 6 round trips, one commit.
-- It shows what the database itself allows for the service's transaction.
\set k random(0, :keys - 1)
\set rid random(1, 1000000000000000)
BEGIN;
SELECT agent, conversation, result_class, action, session_id, retry_fresh
  FROM pgb_report WHERE namespace = 'bench' AND report_id = 'r-' || :rid;
SELECT session_id, provider, host, config_dir, cwd, last_used_at, failure_count
  FROM pgb_session WHERE namespace = 'bench' AND agent = 'coder' AND conversation = 'c-' || :k FOR UPDATE;
INSERT INTO pgb_session (namespace, agent, conversation, session_id, provider, host, config_dir, cwd,
                         last_used_at, failure_count)
VALUES ('bench', 'coder', 'c-' || :k, '00000000-0000-4000-8000-' || lpad(:k::text, 12, '0'), 'claude',
        'bench-worker-1', '/home/agent/.claude', '/work/c-' || :k, now(), 0)
ON CONFLICT (namespace, agent, conversation) DO UPDATE SET
  session_id = EXCLUDED.session_id, provider = EXCLUDED.provider, host = EXCLUDED.host,
  config_dir = EXCLUDED.config_dir, cwd = EXCLUDED.cwd, last_used_at = EXCLUDED.last_used_at,
  failure_count = EXCLUDED.failure_count;
INSERT INTO pgb_report (namespace, report_id, agent, conversation, result_class, action, session_id,
                        retry_fresh, created_at)
VALUES ('bench', 'r-' || :rid, 'coder', 'c-' || :k, 'success', 'stored',
        '00000000-0000-4000-8000-' || lpad(:k::text, 12, '0'), false, now())
ON CONFLICT (namespace, report_id) DO NOTHING;
END;
