-- Deleting one session (delete-session): its rows go, its contribution to the person's
-- running sums is taken out and their later sessions are rescored, in one worker
-- transaction under the person's lock (worker/store/deletions.py). The worker rescores
-- because only it may write analyses; this migration lets it delete the session's rows
-- through one function that always leaves a tombstone, and nothing more: it still
-- deletes no job of its own accord.

-- Tombstones: a deleted session is remembered only as the SHA-256 of its id, enough to
-- refuse a late or re-sent job for it (session_deleted), with the person it belonged to,
-- so that forget-user (ON DELETE CASCADE) removes these too.
CREATE TABLE deleted_sessions (
    session_digest  bytea PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    deleted_at      timestamptz NOT NULL DEFAULT now()
);
-- forget-user's cascade finds a person's tombstones by this.
CREATE INDEX deleted_sessions_user_idx ON deleted_sessions (user_id);

CREATE FUNCTION session_digest(s uuid) RETURNS bytea
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN sha256(uuid_send(s));

-- Whether delete-session ran for this session id. A writer that re-creates the
-- session's row checks this after its INSERT: the INSERT waits for a delete in
-- progress (the old row's lock), so the check then sees its tombstone.
CREATE FUNCTION session_deleted(s uuid) RETURNS boolean
    LANGUAGE sql STABLE
    RETURN EXISTS (SELECT 1 FROM deleted_sessions WHERE session_digest = session_digest(s));

-- The session's rows, behind a tombstone: requests, embeddings, analyses, backfills and
-- comparisons naming it go by ON DELETE CASCADE, its rejected messages here. Run by the
-- worker after it has taken the session out of the sums and rescored the later sessions
-- in the same transaction. False when the person has no such session.
CREATE FUNCTION delete_session(u uuid, s uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM lock_user(u);
    DELETE FROM sessions WHERE session_id = s AND user_id = u;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO deleted_sessions (session_digest, user_id) VALUES (session_digest(s), u)
        ON CONFLICT DO NOTHING;
    DELETE FROM rejected_messages WHERE session_id = s;
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION delete_session(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION delete_session(uuid, uuid) TO changewatch_worker;

GRANT SELECT ON deleted_sessions TO changewatch_worker, changewatch_producer;
