-- A versioned, incremental score store.
--
-- * Requests are ordered: every analysis request (a Celery task id) gets a sequence number
--   the first time it is recorded, and only the session's newest request may write.
-- * A session keeps its last good analysis (good_*) apart from its newest attempt, so a
--   failed re-analysis changes nothing but that attempt's status and error.
-- * Embeddings and analyses are keyed by model; one model is active (the one results
--   report), and workers of another model cannot write into the active history.
-- * Baselines come from running sums per person, model and angle (exact int64 fixed
--   point, so the order of additions cannot matter), not from reading the history.
-- * Vectors are bytea (big-endian float32 / int64: Postgres's own binary order), stored
--   EXTERNAL: random-looking floats do not compress and pglz only burns CPU trying.

-- Embedding models: exactly one is active once any worker has registered.
CREATE TABLE models (
    model_id       text PRIMARY KEY,
    embedding_dim  integer NOT NULL CHECK (embedding_dim > 0),
    active         boolean NOT NULL DEFAULT false,
    registered_at  timestamptz NOT NULL DEFAULT now(),
    activated_at   timestamptz
);
CREATE UNIQUE INDEX models_one_active_idx ON models (active) WHERE active;

INSERT INTO models (model_id, embedding_dim)
SELECT model_id, max(embedding_dim) FROM analyses GROUP BY model_id;
-- The model with the most analyses stays the one results report.
UPDATE models SET active = true, activated_at = now()
 WHERE model_id = (SELECT model_id FROM analyses GROUP BY model_id
                    ORDER BY count(*) DESC, model_id LIMIT 1);

-- Every request to analyze a session, numbered in the order it was first recorded
-- (by the producer when it enqueues, by the worker for a message sent straight to Redis).
CREATE TABLE analysis_requests (
    task_id       text PRIMARY KEY,
    session_id    uuid NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    requested_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX analysis_requests_session_idx ON analysis_requests (session_id, seq);

INSERT INTO analysis_requests (task_id, session_id, requested_at)
SELECT COALESCE(task_id, 'migrated-' || session_id::text), session_id, created_at
  FROM sessions ORDER BY created_at;

-- sessions.{status, error_*, attempts, task_id, captured_at, images} describe the newest
-- request and its attempt; good_* the request whose analysis results report.
ALTER TABLE sessions
    ADD COLUMN request_seq       bigint,
    ADD COLUMN good_task_id      text,
    ADD COLUMN good_request_seq  bigint,
    ADD COLUMN good_captured_at  timestamptz,
    ADD COLUMN good_images       jsonb,
    ADD COLUMN good_at           timestamptz;
UPDATE sessions s SET request_seq = r.seq
  FROM analysis_requests r WHERE r.session_id = s.session_id;
UPDATE sessions s
   SET good_task_id = r.task_id, good_request_seq = r.seq, good_captured_at = s.captured_at,
       good_images = s.images, good_at = COALESCE(s.finished_at, s.updated_at)
  FROM analysis_requests r
 WHERE r.session_id = s.session_id
   AND EXISTS (SELECT 1 FROM analyses a WHERE a.session_id = s.session_id);

-- Embeddings: one row per session, model and angle.
CREATE FUNCTION pg_temp.float4_bytes(v real[]) RETURNS bytea LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(float4send(x), ''::bytea ORDER BY i) FROM unnest(v) WITH ORDINALITY AS u(x, i)
$$;
ALTER TABLE angle_embeddings DROP CONSTRAINT angle_embeddings_pkey;
ALTER TABLE angle_embeddings DROP CONSTRAINT angle_embeddings_embedding_check;
ALTER TABLE angle_embeddings ALTER COLUMN embedding TYPE bytea
    USING pg_temp.float4_bytes(embedding);
ALTER TABLE angle_embeddings ALTER COLUMN embedding SET STORAGE EXTERNAL;
ALTER TABLE angle_embeddings ADD CHECK (octet_length(embedding) > 0);
ALTER TABLE angle_embeddings ADD PRIMARY KEY (session_id, model_id, angle);
ALTER TABLE angle_embeddings
    ADD FOREIGN KEY (model_id) REFERENCES models (model_id);

-- The session embedding is the mean of its angles: derived, no longer stored.
DROP TABLE session_embeddings;

-- Analyses: one per session and model, with the capture time that placed it in the
-- history (the good request's), and a revision that changes whenever its numbers do.
CREATE SEQUENCE analysis_revision;
ALTER TABLE analyses DROP CONSTRAINT analyses_pkey;
ALTER TABLE analyses
    ADD COLUMN user_id      uuid,
    ADD COLUMN captured_at  timestamptz,
    ADD COLUMN request_seq  bigint,
    ADD COLUMN revision     bigint NOT NULL DEFAULT nextval('analysis_revision');
UPDATE analyses a SET user_id = s.user_id, captured_at = s.captured_at,
                      request_seq = s.good_request_seq
  FROM sessions s WHERE s.session_id = a.session_id;
ALTER TABLE analyses ALTER COLUMN user_id SET NOT NULL;
ALTER TABLE analyses ALTER COLUMN captured_at SET NOT NULL;
ALTER TABLE analyses ADD PRIMARY KEY (session_id, model_id);
ALTER TABLE analyses ADD FOREIGN KEY (model_id) REFERENCES models (model_id);
-- "This person's sessions of this model captured at or after T": the rescoring suffix.
CREATE INDEX analyses_history_idx ON analyses (user_id, model_id, captured_at);

-- Running sums of the fixed-point embeddings (value * 2^28 as int64) of every analyzed
-- session, per person, model and angle; the 'session' row holds the session count only.
-- Absent sums are rebuilt from the embeddings on the next write (e.g. after this migration).
CREATE TABLE baseline_sums (
    user_id   uuid NOT NULL,
    model_id  text NOT NULL REFERENCES models (model_id),
    angle     text NOT NULL
              CHECK (angle IN ('front', 'left', 'right', 'up', 'down', 'raised', 'session')),
    sessions  integer NOT NULL CHECK (sessions >= 0),
    total     bytea,
    PRIMARY KEY (user_id, model_id, angle)
);
ALTER TABLE baseline_sums ALTER COLUMN total SET STORAGE EXTERNAL;

-- Comparisons remember the analysis revisions they were computed from: when either
-- input changes, the stored numbers are stale and are recomputed on read.
ALTER TABLE comparisons
    ADD COLUMN model_id            text,
    ADD COLUMN current_revision    bigint,
    ADD COLUMN previous_revision   bigint;

-- Backfills: one row per session and model being re-embedded, with its own outcome.
CREATE TABLE backfill_jobs (
    session_id     uuid NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    model_id       text NOT NULL REFERENCES models (model_id),
    request_seq    bigint NOT NULL,
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    error_code     text,
    error_message  text,
    attempts       integer NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, model_id)
);
CREATE INDEX backfill_jobs_status_idx ON backfill_jobs (model_id, status);

GRANT SELECT, INSERT, UPDATE ON models TO changewatch_worker;
GRANT SELECT, UPDATE ON models TO changewatch_producer;
GRANT SELECT, INSERT ON analysis_requests TO changewatch_worker, changewatch_producer;
GRANT SELECT, INSERT, UPDATE, DELETE ON baseline_sums TO changewatch_worker;
GRANT SELECT, DELETE ON baseline_sums TO changewatch_producer;
GRANT USAGE ON SEQUENCE analysis_revision TO changewatch_worker;
GRANT SELECT, UPDATE ON backfill_jobs TO changewatch_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON backfill_jobs TO changewatch_producer;
GRANT SELECT ON angle_embeddings TO changewatch_producer;
