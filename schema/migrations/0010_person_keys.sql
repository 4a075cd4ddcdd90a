-- Every row of a person is keyed by the person: ready to shard by user_id (Citus).
--
-- * Every table that holds a person's data carries user_id, and user_id leads every
--   primary key, unique key and foreign key between them, so each table can be
--   distributed by user_id in one colocation group (docs/scaling.md: "Sharding by
--   person"): a person's rows live on one shard, and a foreign key never crosses shards.
-- * Kept apart, with their reason: models (a small shared lookup: a reference table),
--   forgotten_users (keyed by the digest of the id, which is all it keeps: distributed by
--   user_digest), rejected_messages (messages that may name no valid person: kept on the
--   coordinator), schema_migrations.
-- * The person's lock is a row lock on their users row (FOR NO KEY UPDATE), not an
--   advisory lock: a row lock holds on the shard that holds the row, where every writer
--   for the person goes; an advisory lock holds only on the node that takes it. NO KEY
--   UPDATE leaves foreign-key checks (KEY SHARE) free, as the advisory lock did, while
--   forget-user's DELETE of the row still waits for every holder.
-- * A session id stays one person's: the writers check, in the transaction that records
--   the session, that no other person has a session of that id (a read across people,
--   the one the store makes on a write: docs/scaling.md says why and what replaces it).

-- Children of sessions learn their person, and lose their foreign keys to session_id.
ALTER TABLE analysis_requests ADD COLUMN user_id uuid;
ALTER TABLE angle_embeddings ADD COLUMN user_id uuid;
ALTER TABLE backfill_jobs ADD COLUMN user_id uuid;
UPDATE analysis_requests r SET user_id = s.user_id FROM sessions s WHERE s.session_id = r.session_id;
UPDATE angle_embeddings e SET user_id = s.user_id FROM sessions s WHERE s.session_id = e.session_id;
UPDATE backfill_jobs b SET user_id = s.user_id FROM sessions s WHERE s.session_id = b.session_id;
ALTER TABLE analysis_requests ALTER COLUMN user_id SET NOT NULL;
ALTER TABLE angle_embeddings ALTER COLUMN user_id SET NOT NULL;
ALTER TABLE backfill_jobs ALTER COLUMN user_id SET NOT NULL;

DO $$
DECLARE
    fk record;
BEGIN
    FOR fk IN
        SELECT conrelid::regclass AS tbl, conname FROM pg_constraint
         WHERE contype = 'f' AND confrelid = 'sessions'::regclass
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', fk.tbl, fk.conname);
    END LOOP;
END
$$;

-- Primary and unique keys lead with the person.
ALTER TABLE sessions DROP CONSTRAINT sessions_pkey;
ALTER TABLE sessions ADD PRIMARY KEY (user_id, session_id);
-- The lookups by session id alone (the producer's API is keyed by it) and the check that
-- a session id is nobody else's.
CREATE INDEX sessions_session_idx ON sessions (session_id);

ALTER TABLE analysis_requests DROP CONSTRAINT analysis_requests_pkey;
ALTER TABLE analysis_requests DROP CONSTRAINT analysis_requests_seq_key;
ALTER TABLE analysis_requests ADD PRIMARY KEY (user_id, task_id);
-- seq is an identity: unique without an index of its own; a session's are found here.
DROP INDEX analysis_requests_session_idx;
CREATE INDEX analysis_requests_session_idx ON analysis_requests (user_id, session_id, seq);

ALTER TABLE angle_embeddings DROP CONSTRAINT angle_embeddings_pkey;
ALTER TABLE angle_embeddings ADD PRIMARY KEY (user_id, session_id, model_id, angle);

ALTER TABLE analyses DROP CONSTRAINT analyses_pkey;
ALTER TABLE analyses ADD PRIMARY KEY (user_id, session_id, model_id);

ALTER TABLE comparisons DROP CONSTRAINT comparisons_pkey;
ALTER TABLE comparisons ADD PRIMARY KEY (user_id, current_session_id, previous_session_id);
CREATE INDEX comparisons_sessions_idx ON comparisons (current_session_id, previous_session_id);
DROP INDEX comparisons_user_idx;

ALTER TABLE backfill_jobs DROP CONSTRAINT backfill_jobs_pkey;
ALTER TABLE backfill_jobs ADD PRIMARY KEY (user_id, session_id, model_id);
CREATE INDEX backfill_jobs_session_idx ON backfill_jobs (session_id, model_id);

ALTER TABLE deleted_sessions DROP CONSTRAINT deleted_sessions_pkey;
ALTER TABLE deleted_sessions ADD PRIMARY KEY (user_id, session_digest);
DROP INDEX deleted_sessions_user_idx;
-- Whose a deleted session was, by its digest (the producer's status of a session id).
CREATE INDEX deleted_sessions_digest_idx ON deleted_sessions (session_digest);

ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE outbox ADD PRIMARY KEY (user_id, id);
-- The relay reads the oldest rows first, across people.
CREATE INDEX outbox_id_idx ON outbox (id);
DROP INDEX outbox_user_idx;

-- Foreign keys between a person's tables carry the person (colocated in Citus).
ALTER TABLE analysis_requests ADD FOREIGN KEY (user_id, session_id)
    REFERENCES sessions (user_id, session_id) ON DELETE CASCADE;
ALTER TABLE angle_embeddings ADD FOREIGN KEY (user_id, session_id)
    REFERENCES sessions (user_id, session_id) ON DELETE CASCADE;
ALTER TABLE analyses ADD FOREIGN KEY (user_id, session_id)
    REFERENCES sessions (user_id, session_id) ON DELETE CASCADE;
ALTER TABLE backfill_jobs ADD FOREIGN KEY (user_id, session_id)
    REFERENCES sessions (user_id, session_id) ON DELETE CASCADE;
ALTER TABLE comparisons ADD FOREIGN KEY (user_id, current_session_id)
    REFERENCES sessions (user_id, session_id) ON DELETE CASCADE;
ALTER TABLE comparisons ADD FOREIGN KEY (user_id, previous_session_id)
    REFERENCES sessions (user_id, session_id) ON DELETE CASCADE;
-- Covered by the primary keys that lead with user_id.
DROP INDEX baseline_sums_user_idx;
DROP INDEX analyses_user_idx;

-- The person's lock: a row lock on their users row. Nothing to lock for a person who is
-- not enrolled: the writers then find them unknown or forgotten, and write nothing.
-- SECURITY DEFINER: a row lock needs UPDATE on the table, which neither role has (nor
-- needs) on users.
CREATE OR REPLACE FUNCTION lock_user(u uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM users WHERE user_id = u FOR NO KEY UPDATE;
END
$$;

-- Enroll unless forgotten. The users row is inserted first and the tombstone read after:
-- a forget that ran meanwhile holds the row (its INSERT waits), so the read sees it.
CREATE OR REPLACE FUNCTION enroll_user(u uuid) RETURNS text
    LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO users (user_id) VALUES (u) ON CONFLICT DO NOTHING;
    PERFORM lock_user(u);
    IF EXISTS (SELECT 1 FROM forgotten_users WHERE user_digest = user_digest(u)) THEN
        DELETE FROM users WHERE user_id = u;
        RETURN 'forgotten';
    END IF;
    RETURN 'enrolled';
END
$$;

-- Whether delete-session ran for this person's session id.
CREATE FUNCTION session_deleted(u uuid, s uuid) RETURNS boolean
    LANGUAGE sql STABLE
    RETURN EXISTS (SELECT 1 FROM deleted_sessions
                    WHERE user_id = u AND session_digest = session_digest(s));

CREATE OR REPLACE FUNCTION delete_session(u uuid, s uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM lock_user(u);
    DELETE FROM sessions WHERE user_id = u AND session_id = s;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO deleted_sessions (session_digest, user_id) VALUES (session_digest(s), u)
        ON CONFLICT DO NOTHING;
    DELETE FROM rejected_messages WHERE session_id = s;
    RETURN true;
END
$$;
