-- ferry's run state (PostgreSQL). Times are Unix milliseconds (UTC).

CREATE TABLE dag_versions (
    id           BIGSERIAL PRIMARY KEY,
    dag_id       TEXT    NOT NULL,
    content_hash TEXT    NOT NULL,
    file         TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    loaded_at    BIGINT  NOT NULL,
    UNIQUE (dag_id, content_hash)
);

CREATE TABLE dag_runs (
    id             BIGSERIAL PRIMARY KEY,
    dag_id         TEXT    NOT NULL,
    run_id         TEXT    NOT NULL UNIQUE,
    logical_date   BIGINT  NOT NULL,
    interval_start BIGINT  NOT NULL,
    interval_end   BIGINT  NOT NULL,
    run_type       TEXT    NOT NULL,
    conf           TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    dag_version_id BIGINT  NOT NULL REFERENCES dag_versions (id),
    queued_at      BIGINT  NOT NULL,
    started_at     BIGINT,
    ended_at       BIGINT,
    -- A run is never created twice for the same DAG and logical date.
    UNIQUE (dag_id, logical_date)
);
CREATE INDEX dag_runs_by_state ON dag_runs (state);

CREATE TABLE task_instances (
    id              BIGSERIAL PRIMARY KEY,
    run_pk          BIGINT  NOT NULL REFERENCES dag_runs (id),
    task_id         TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    try_number      BIGINT  NOT NULL DEFAULT 0,
    max_tries       BIGINT  NOT NULL,
    priority        BIGINT  NOT NULL,
    pool            TEXT    NOT NULL,
    -- Not before this time (retry delay, deferral poll).
    ready_at        BIGINT,
    queued_at       BIGINT,
    started_at      BIGINT,
    ended_at        BIGINT,
    heartbeat_at    BIGINT,
    worker          TEXT,
    -- Fencing number: bumped by every claim; a worker's writes must carry the current one.
    lease           BIGINT  NOT NULL DEFAULT 0,
    exit_code       BIGINT,
    external_job_id TEXT,
    UNIQUE (run_pk, task_id)
);
CREATE INDEX task_instances_by_state ON task_instances (state);

CREATE TABLE attempts (
    id               BIGSERIAL PRIMARY KEY,
    task_instance_id BIGINT  NOT NULL REFERENCES task_instances (id),
    try_number       BIGINT  NOT NULL,
    lease            BIGINT  NOT NULL,
    worker           TEXT    NOT NULL,
    rendered         TEXT    NOT NULL,
    started_at       BIGINT  NOT NULL,
    ended_at         BIGINT,
    outcome          TEXT,
    exit_code        BIGINT,
    log              TEXT    NOT NULL DEFAULT '',
    UNIQUE (task_instance_id, try_number)
);

-- Append-only: every state change with its cause.
CREATE TABLE events (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT  NOT NULL,
    dag_id     TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    task_id    TEXT,
    try_number BIGINT,
    from_state TEXT,
    to_state   TEXT    NOT NULL,
    cause      TEXT    NOT NULL,
    detail     TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX events_by_run ON events (run_id, id);
