-- The people changewatch measures, and the ones it was told to forget.
--
-- A person is enrolled once (the Python producer enrolls on enqueue; other senders call
-- `python -m producer enroll` or the API). Every row of a person hangs off `users` with
-- ON DELETE CASCADE, so forgetting is one DELETE, and a write that races it cannot
-- re-create anything: its foreign-key check waits for the forget, then fails.
CREATE TABLE users (
    user_id      uuid PRIMARY KEY,
    enrolled_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO users (user_id)
SELECT user_id FROM sessions
UNION SELECT user_id FROM comparisons
UNION SELECT user_id FROM baseline_sums
UNION SELECT user_id FROM analyses;

ALTER TABLE sessions
    ADD CONSTRAINT sessions_user_fk FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE;
ALTER TABLE comparisons
    ADD CONSTRAINT comparisons_user_fk FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE;
ALTER TABLE baseline_sums
    ADD CONSTRAINT baseline_sums_user_fk FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE;
ALTER TABLE analyses
    ADD CONSTRAINT analyses_user_fk FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE;
CREATE INDEX baseline_sums_user_idx ON baseline_sums (user_id);
CREATE INDEX analyses_user_idx ON analyses (user_id);

-- Tombstones: a forgotten person is remembered only as the SHA-256 of their id, enough
-- to refuse a late or re-sent job for them, and nothing to read back who they were.
CREATE TABLE forgotten_users (
    user_digest   bytea PRIMARY KEY,
    forgotten_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION user_digest(u uuid) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN sha256(uuid_send(u));

-- The person's lock: analysis writes, enrollment and forgetting take it, so none of
-- them interleaves with another for the same person. Same key as before this migration.
CREATE FUNCTION lock_user(u uuid) RETURNS void
    LANGUAGE sql
    RETURN pg_advisory_xact_lock(hashtextextended(u::text, 0));

-- 'enrolled', 'forgotten' or 'unknown': what a message for this person may do.
CREATE FUNCTION user_standing(u uuid) RETURNS text
    LANGUAGE sql STABLE
    RETURN CASE
        WHEN EXISTS (SELECT 1 FROM users WHERE user_id = u) THEN 'enrolled'
        WHEN EXISTS (SELECT 1 FROM forgotten_users WHERE user_digest = user_digest(u))
            THEN 'forgotten'
        ELSE 'unknown'
    END;

-- Enroll unless forgotten; returns the standing afterwards. Call it in a transaction
-- of its own statement (it locks the person until that transaction ends).
CREATE FUNCTION enroll_user(u uuid) RETURNS text
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM lock_user(u);
    IF EXISTS (SELECT 1 FROM forgotten_users WHERE user_digest = user_digest(u)) THEN
        RETURN 'forgotten';
    END IF;
    INSERT INTO users (user_id) VALUES (u) ON CONFLICT DO NOTHING;
    RETURN 'enrolled';
END
$$;

-- Compare tasks' ids, so forget-user can delete their results from Celery's backend.
ALTER TABLE comparisons ADD COLUMN task_id text;

GRANT SELECT ON users, forgotten_users TO changewatch_worker;
GRANT SELECT, INSERT, DELETE ON users TO changewatch_producer;
GRANT SELECT, INSERT ON forgotten_users TO changewatch_producer;
