-- Least-privilege group roles. Grant them to login roles, e.g.
--   CREATE ROLE producer_svc LOGIN PASSWORD '...' IN ROLE changewatch_producer;
-- Neither owns a table, so neither can alter or drop the schema.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'changewatch_producer') THEN
        CREATE ROLE changewatch_producer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'changewatch_worker') THEN
        CREATE ROLE changewatch_worker NOLOGIN;
    END IF;
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO changewatch_producer, changewatch_worker;

-- Producer: record and replay jobs, read results, forget users (children go by CASCADE).
GRANT SELECT, INSERT, UPDATE, DELETE ON sessions, comparisons TO changewatch_producer;
GRANT SELECT ON analyses TO changewatch_producer;

-- Worker: job state, embeddings, analyses, comparisons; it never deletes a job.
GRANT SELECT, INSERT, UPDATE ON sessions, comparisons TO changewatch_worker;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON angle_embeddings, session_embeddings, analyses TO changewatch_worker;
