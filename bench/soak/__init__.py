"""``python -m bench.soak``: hundreds of sessions through real workers while the stack breaks.

A private stack (``bench.harness.faults.FaultStack``: Redis with an append-only file, a
throwaway Postgres cluster, moto's S3 server behind a TCP proxy, real Celery workers with
the shipped Celery settings) analyzes ``--sessions`` sessions of the real ``series``
photos. A producer thread sends them at a steady rate, retrying a send that fails, as a
client should. Every ``--fault-every`` seconds one fault is injected, in turn:

- ``kill_worker``: kill -9 of one worker; a supervisor starts a new one a second later
  and the workers' recovery sweep puts the killed worker's unacked jobs back in the queue
  (``recovered``: how long after the kill its last job finished);
- ``redis_restart`` / ``redis_crash``: SIGTERM (AOF flushed) or SIGKILL, 3 s down;
- ``postgres_restart`` / ``postgres_crash``: ``pg_ctl stop -m fast`` or ``-m immediate``
  (WAL recovery on start), 4 s down;
- ``s3_hang``: moto SIGSTOPped for 5 s (requests hang, then complete);
- ``s3_unreachable``: the proxy in front of S3 down for 5 s (connections refused/reset);
- ``primary_kill`` (with ``--broker sentinel --faults primary_kill``): SIGKILL of the Redis
  primary; a sentinel promotes the replica, the killed server comes back as a replica;
- ``pg_primary_kill`` / ``pg_node_kill`` (with ``--database patroni``: one etcd and two
  Postgres nodes under Patroni, synchronous replication, a multi-host ``DATABASE_URL``):
  SIGKILL of the primary's postmaster, or of its Patroni and postmaster (a lost host,
  started again once the standby is promoted); ``db_failovers`` gives the promotion
  time, when jobs finished again (``back_s``) and ``committed_lost``: sessions the old
  primary showed succeeded that the new one does not. ``--max-faults`` caps the faults.

Afterwards it counts, from Postgres and the workers' logs:

- ``sent``: sessions the producer enqueued (``enqueue_errors``: sends that raised first);
- ``succeeded``, ``failed`` (with their error codes);
- ``duplicated``: sessions with more than one analyses row or a duplicated or missing
  embedding (impossible by the keys, counted anyway); ``sums_mismatched``: people whose
  running baseline sums are not exactly the sums of their stored embeddings;
- ``redelivered``: sessions started more than once (``attempts > 1``: retries and
  redeliveries); ``stored_more_than_once``: sessions whose analysis was written by more
  than one execution (from the workers' "analysis stored" log lines);
- ``resent_by_reaper``: sessions whose message the broker lost, found and re-sent by
  the reaper (``producer.reaper`` with its shipped defaults, every 30 s as compose runs it);
- ``lost``: sessions not finished by the deadline;
- ``mismatched``: sessions whose scores differ from an undisturbed in-order run (> 1e-6);
- ``orphans``: embeddings, analyses or comparisons whose session is gone.

Prints the JSON and writes it to ``--out`` (default ``artifacts/soak/soak.json``).
Exits 0 only when every sent session succeeded exactly once with the expected numbers.
"""
