-- Manual runs asked for with an Idempotency-Key (an HTTP trigger): the key names the run its
-- first request made, so that a repeated request gets that run, never a second one. Written in
-- the run's own transaction. The fingerprint (a digest of the DAG, date, force flag and
-- parameters) tells a repeat from another request given the same key.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT    PRIMARY KEY,
    fingerprint     TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    created_at      BIGINT  NOT NULL
);

-- Every DAG's runs, newest first, a page at a time (GET /api/v1/runs without a DAG).
CREATE INDEX dag_runs_by_logical_date ON dag_runs (logical_date, id);
