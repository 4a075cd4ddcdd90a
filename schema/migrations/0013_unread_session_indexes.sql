-- Two indexes on sessions that no statement reads any more: a person's sessions by time
-- are read from analyses (analyses_history_idx: baselines, results, comparisons), and the
-- backfill's list orders every person's sessions, which an index led by user_id does not
-- serve. Each job state change (three versions of a session's row: none is HOT, since
-- status and updated_at are indexed) wrote an entry to both. In production, where a
-- person's sessions are weeks apart, each first touch of a person's leaf page after a
-- checkpoint also wrote a full-page image: about 10 KB of WAL a session together
-- (bench.store.cost --checkpoint-every 1). Lookups by person still use sessions_pkey
-- (user_id, session_id).
DROP INDEX sessions_user_captured_idx;
DROP INDEX sessions_user_good_captured_idx;
