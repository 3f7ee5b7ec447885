-- Raw baseline of ReportResult: one autocommit upsert (src/store/postgres.rs UPSERT_SESSION).
\set k random(0, :keys - 1)
INSERT INTO pgb_session (namespace, agent, conversation, session_id, provider, host, config_dir, cwd,
                         last_used_at, failure_count)
VALUES ('bench', 'coder', 'c-' || :k, '00000000-0000-4000-8000-' || lpad(:k::text, 12, '0'), 'claude',
        'bench-worker-1', '/home/agent/.claude', '/work/c-' || :k, now(), 0)
ON CONFLICT (namespace, agent, conversation) DO UPDATE SET
  session_id = EXCLUDED.session_id, provider = EXCLUDED.provider, host = EXCLUDED.host,
  config_dir = EXCLUDED.config_dir, cwd = EXCLUDED.cwd, last_used_at = EXCLUDED.last_used_at,
  failure_count = EXCLUDED.failure_count;
