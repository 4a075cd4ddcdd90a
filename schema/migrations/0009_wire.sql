-- Upstream services over the wire: people enrolled and forgotten by task, and the
-- notifications of finished jobs, written through a transactional outbox.

-- The outbox: one row per notification, inserted in the transaction that finishes the
-- job (its analysis, or its failure), so a notification exists if and only if the job's
-- outcome committed. The relay (worker/relay.py) sends rows in id order and deletes
-- them once the broker took them: the table holds only what is not sent yet.
CREATE TABLE outbox (
    id          bigserial PRIMARY KEY,
    -- The notification task's id, fixed here: a re-send carries the same id, so the
    -- receiver deduplicates on it.
    message_id  uuid NOT NULL,
    -- A forgotten person's unsent notifications go with them.
    user_id     uuid NOT NULL REFERENCES users ON DELETE CASCADE,
    session_id  uuid NOT NULL,
    queue       text NOT NULL,
    body        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text
);
-- The relay reads the oldest rows first; forget-user finds a person's by the cascade.
CREATE INDEX outbox_user_idx ON outbox (user_id);

-- Which requests have had their notification written: each request is told once, and
-- a newer request's finish tells the older unfinished ones first (superseded), so a
-- session's notifications are in request order.
ALTER TABLE analysis_requests ADD COLUMN notified boolean NOT NULL DEFAULT false;
-- Requests recorded before this migration were answered by polling: none is owed.
UPDATE analysis_requests SET notified = true;

GRANT SELECT, INSERT, UPDATE, DELETE ON outbox TO changewatch_worker;
GRANT USAGE ON SEQUENCE outbox_id_seq TO changewatch_worker;
GRANT UPDATE (notified) ON analysis_requests TO changewatch_worker;
GRANT SELECT ON outbox TO changewatch_producer;

-- enroll_person and forget_person run in the worker (it holds the database, the broker
-- and the storage): enrolling inserts a users row; forgetting writes the tombstone,
-- deletes the users row (the rest goes by ON DELETE CASCADE, run as the tables' owner)
-- and the person's rejected messages. Nothing else new: the worker still deletes no job
-- of anyone it is not forgetting.
GRANT INSERT, DELETE ON users TO changewatch_worker;
GRANT INSERT ON forgotten_users TO changewatch_worker;
GRANT DELETE ON rejected_messages TO changewatch_worker;
