-- ferry's run state (SQLite). Times are Unix milliseconds (UTC).

CREATE TABLE dag_versions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id       TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    file         TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    loaded_at    INTEGER NOT NULL,
    UNIQUE (dag_id, content_hash)
);

CREATE TABLE dag_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    dag_id         TEXT    NOT NULL,
    run_id         TEXT    NOT NULL UNIQUE,
    logical_date   INTEGER NOT NULL,
    interval_start INTEGER NOT NULL,
    interval_end   INTEGER NOT NULL,
    run_type       TEXT    NOT NULL,
    conf           TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    dag_version_id INTEGER NOT NULL REFERENCES dag_versions (id),
    queued_at      INTEGER NOT NULL,
    started_at     INTEGER,
    ended_at       INTEGER,
    -- A run is never created twice for the same DAG and logical date.
    UNIQUE (dag_id, logical_date)
);
CREATE INDEX dag_runs_by_state ON dag_runs (state);

CREATE TABLE task_instances (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_pk          INTEGER NOT NULL REFERENCES dag_runs (id),
    task_id         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    try_number      INTEGER NOT NULL DEFAULT 0,
    max_tries       INTEGER NOT NULL,
    priority        INTEGER NOT NULL,
    pool            TEXT    NOT NULL,
    -- Not before this time (retry delay, deferral poll).
    ready_at        INTEGER,
    queued_at       INTEGER,
    started_at      INTEGER,
    ended_at        INTEGER,
    heartbeat_at    INTEGER,
    worker          TEXT,
    -- Fencing number: bumped by every claim; a worker's writes must carry the current one.
    lease           INTEGER NOT NULL DEFAULT 0,
    exit_code       INTEGER,
    external_job_id TEXT,
    UNIQUE (run_pk, task_id)
);
CREATE INDEX task_instances_by_state ON task_instances (state);

CREATE TABLE attempts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    task_instance_id INTEGER NOT NULL REFERENCES task_instances (id),
    try_number       INTEGER NOT NULL,
    lease            INTEGER NOT NULL,
    worker           TEXT    NOT NULL,
    rendered         TEXT    NOT NULL,
    started_at       INTEGER NOT NULL,
    ended_at         INTEGER,
    outcome          TEXT,
    exit_code        INTEGER,
    log              TEXT    NOT NULL DEFAULT '',
    UNIQUE (task_instance_id, try_number)
);

-- Append-only: every state change with its cause.
CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    dag_id     TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    task_id    TEXT,
    try_number INTEGER,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    cause      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX events_by_run ON events (run_id, id);
