-- Raw baseline of Get: the service's primary-key SELECT (src/store/postgres.rs SELECT_SESSION).
\set k random(0, :keys - 1)
SELECT session_id, provider, host, config_dir, cwd, last_used_at, failure_count
  FROM pgb_session WHERE namespace = 'bench' AND agent = 'coder' AND conversation = 'c-' || :k;
