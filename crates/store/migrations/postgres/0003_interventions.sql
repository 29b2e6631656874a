-- Interventions of operators: who made a change and why, and paused DAGs.

-- Who made a change (the OS user of a CLI command; an API token's name) and why (--reason).
-- Empty for the engine's own decisions.
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN reason TEXT;

-- DAGs an operator paused: they get no new scheduled runs; runs already made go on.
CREATE TABLE dag_pauses (
    dag_id    TEXT    PRIMARY KEY,
    paused_at BIGINT NOT NULL,
    actor     TEXT    NOT NULL,
    reason    TEXT
);

-- Tries given back to a task (interrupted by ferry itself), counted apart from max_tries so that
-- an operator raising max_tries by clearing the task does not change the cap on them.
ALTER TABLE task_instances ADD COLUMN free_tries BIGINT NOT NULL DEFAULT 0;
