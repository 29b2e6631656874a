-- Supervised attempts, one owner per store, and wake-ups between ferry processes.

-- Who supervises a command attempt: host, boot id, pid and start time of its supervisor, and the
-- folder where it writes the output and the result (JSON). Recorded in the claim, before the
-- command may start, so that a restarted ferry can always find it.
ALTER TABLE attempts ADD COLUMN supervisor TEXT;

-- Counters that other ferry processes bump to wake the owner (`ferry run` handing a run over,
-- `ferry tasks clear`).
CREATE TABLE store_signals (
    name    TEXT    PRIMARY KEY,
    counter INTEGER NOT NULL
);
INSERT INTO store_signals (name, counter) VALUES ('wake', 0);

-- The process that owns the store, and when it last said it was alive (the lock itself is a file lock beside the database).
CREATE TABLE store_owner (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT    NOT NULL,
    since  INTEGER NOT NULL,
    seen_at INTEGER NOT NULL
);
