-- The warehouse in the dev environment (BigQuery in prod): it starts empty; the DAGs' tasks
-- create their tables.
CREATE TABLE IF NOT EXISTS ferry_seeded (at TEXT NOT NULL);
INSERT INTO ferry_seeded VALUES (datetime('now'));
