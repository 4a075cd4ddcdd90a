-- Messages a worker could not turn into a job (missing or extra fields, bad ids, ...),
-- kept so the sender's mistake is findable: `python -m producer status S` reports them.
CREATE TABLE rejected_messages (
    id             bigserial PRIMARY KEY,
    task_name      text NOT NULL,
    task_id        text,
    session_id     uuid,                    -- when the message carried a valid one
    payload        jsonb NOT NULL,
    error_code     text NOT NULL,
    error_message  text NOT NULL,
    received_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejected_messages_session_idx ON rejected_messages (session_id, received_at);

GRANT SELECT, INSERT ON rejected_messages TO changewatch_worker;
GRANT USAGE ON SEQUENCE rejected_messages_id_seq TO changewatch_worker;
GRANT SELECT, DELETE ON rejected_messages TO changewatch_producer;
