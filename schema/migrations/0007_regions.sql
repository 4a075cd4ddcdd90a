-- Region maps: a 3x3 grid of every angle, pooled from the same forward pass as the
-- angle's embedding and reduced to 128 dimensions by a fixed random projection
-- (worker/regions.py).
--
-- * Region vectors live on their angle's row: 9 x 128 big-endian float32 (4,608 bytes),
--   keyed, versioned by model, backfilled and forgotten exactly as the angle embedding
--   is (the row cascades from its session, which cascades from its person).
-- * Region baselines are running sums beside the angle's, in the same row and the same
--   exact int64 fixed point, with their own count: sessions stored before this migration
--   have no region vectors, so a region baseline may count fewer sessions than its angle.
-- * Both EXTERNAL, as the other vectors: random-looking floats do not compress.
ALTER TABLE angle_embeddings ADD COLUMN regions bytea
    CHECK (regions IS NULL OR octet_length(regions) > 0);
ALTER TABLE angle_embeddings ALTER COLUMN regions SET STORAGE EXTERNAL;

ALTER TABLE baseline_sums
    ADD COLUMN region_sessions integer NOT NULL DEFAULT 0 CHECK (region_sessions >= 0),
    ADD COLUMN region_total bytea;
ALTER TABLE baseline_sums ALTER COLUMN region_total SET STORAGE EXTERNAL;
