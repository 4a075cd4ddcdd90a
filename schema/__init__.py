"""Plain SQL migrations for changewatch's Postgres database."""
