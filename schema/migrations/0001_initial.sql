-- changewatch: sessions (job state), embeddings, analyses and comparisons.

CREATE TABLE sessions (
    session_id     uuid PRIMARY KEY,
    user_id        uuid NOT NULL,
    captured_at    timestamptz NOT NULL,
    images         jsonb NOT NULL,           -- {"front": "s3://bucket/key", ...}
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    error_code     text,
    error_message  text,
    attempts       integer NOT NULL DEFAULT 0,
    task_id        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    started_at     timestamptz,
    finished_at    timestamptz
);

-- "This user's sessions before time T": baselines and backfills.
CREATE INDEX sessions_user_captured_idx ON sessions (user_id, captured_at, session_id);
-- Operators look for failed or stuck jobs.
CREATE INDEX sessions_status_idx ON sessions (status, updated_at);

-- One embedding per angle per session; model_id = architecture/weights/preprocessing.
CREATE TABLE angle_embeddings (
    session_id  uuid NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    angle       text NOT NULL
                CHECK (angle IN ('front', 'left', 'right', 'up', 'down', 'raised')),
    model_id    text NOT NULL,
    embedding   real[] NOT NULL CHECK (cardinality(embedding) > 0),
    PRIMARY KEY (session_id, angle)
);

-- Session embedding = mean of its angle embeddings, same model.
CREATE TABLE session_embeddings (
    session_id  uuid PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
    model_id    text NOT NULL,
    embedding   real[] NOT NULL CHECK (cardinality(embedding) > 0)
);

CREATE TABLE analyses (
    session_id              uuid PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
    model_id                text NOT NULL,
    embedding_dim           integer NOT NULL,
    change_score            double precision NOT NULL CHECK (change_score >= 0),
    is_first_session        boolean NOT NULL,
    baseline_session_count  integer NOT NULL CHECK (baseline_session_count >= 0),
    per_angle               jsonb NOT NULL,   -- [{"angle", "change_score", "baseline_session_count"}]
    computed_at             timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE comparisons (
    current_session_id   uuid NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    previous_session_id  uuid NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    user_id              uuid NOT NULL,
    status               text NOT NULL DEFAULT 'queued'
                         CHECK (status IN ('queued', 'running', 'succeeded', 'failed')),
    error_code           text,
    error_message        text,
    result               jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (current_session_id, previous_session_id),
    CHECK (current_session_id <> previous_session_id)
);
CREATE INDEX comparisons_user_idx ON comparisons (user_id);
