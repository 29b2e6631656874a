-- Manual runs asked for with an Idempotency-Key (an HTTP trigger): the key names the run its
-- first request made, so that a repeated request gets that run, never a second one. Written in
-- the run's own transaction. Keys are per DAG. The fingerprint (a digest of the date, force
-- flag, parameters and run id asked for) tells a repeat from another request given the same key.
CREATE TABLE idempotency_keys (
    dag_id          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    fingerprint     TEXT    NOT NULL,
    run_id          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (dag_id, idempotency_key)
);

-- Every DAG's runs, newest first, a page at a time (GET /api/v1/runs without a DAG).
CREATE INDEX dag_runs_by_logical_date ON dag_runs (logical_date, id);
