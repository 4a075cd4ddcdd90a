-- Running sums are written every few sessions, not on every one.
--
-- A person's sums (baseline_sums: int64 fixed point, ~25 KiB per angle with its regions)
-- were rewritten by every analysis: about 150 KiB of WAL for a session whose embeddings
-- are 75 KiB (bench.store.cost). Now the stored sums are a checkpoint: they cover the
-- analyses marked summed, and a write adds the few others (their embeddings, read with the
-- history in the same round trip) to get the person's exact sums. A write stores the sums
-- again, and marks every analysis summed, once that tail would reach SUMS_EVERY sessions
-- (worker/store/analyses.py), or when it replaces or removes a session, or finds no sums.
-- Sums are exact integers, so when they are written changes nothing they add up to.
ALTER TABLE analyses ADD COLUMN summed boolean NOT NULL DEFAULT true;
-- The tail a write reads: few rows per person, found without touching the summed ones.
CREATE INDEX analyses_unsummed_idx ON analyses (user_id, model_id) WHERE NOT summed;
