-- What the photos of a session's good request say about themselves, per angle:
-- {"front": {"quality": {"score", "flags", "metrics"}, "equipment": {make, model, lens,
-- width, height} | null}, ...}. Model-independent, so kept with the session, not the
-- analysis; results read it beside the person's recent sessions' (equipment changes).
ALTER TABLE sessions ADD COLUMN good_photos jsonb;

-- "This person's sessions before T" by the capture time results are placed at.
CREATE INDEX sessions_user_good_captured_idx ON sessions (user_id, good_captured_at)
    WHERE good_captured_at IS NOT NULL;
