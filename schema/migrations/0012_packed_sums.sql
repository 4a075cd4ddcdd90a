-- Running sums are stored packed (schema/vectors.py encode_sum: about 54% of the raw
-- bytes, and of their WAL), in a table of their own: a worker of the release before,
-- still running while the workers are replaced, reads baseline_sums only, so it never
-- meets a packed sum. When a person's sums are packed it finds none there, rebuilds them
-- from the embeddings (as after any migration) and stores them there, raw. A worker of
-- this release reads a person's raw sums first when it finds any (none is older than a
-- packed one: every packed write deletes the person's raw rows of that model) and packs
-- them at its next checkpoint; rows already in baseline_sums stay until then.
CREATE TABLE packed_sums (LIKE baseline_sums INCLUDING ALL);
ALTER TABLE packed_sums
    ADD CONSTRAINT packed_sums_model_fk FOREIGN KEY (model_id) REFERENCES models (model_id),
    ADD CONSTRAINT packed_sums_user_fk
        FOREIGN KEY (user_id) REFERENCES users (user_id) ON DELETE CASCADE;
GRANT SELECT, INSERT, UPDATE, DELETE ON packed_sums TO changewatch_worker;
GRANT SELECT, DELETE ON packed_sums TO changewatch_producer;
