-- The application's database, as the dev environment's stand-in: made by ferry in
-- .ferry/dev/app_db.sqlite the first time an engine starts (`ferry serve`, `ferry run`).
-- Events of the last 30 days, timestamps in Asia/Tokyo like the application writes them.

CREATE TABLE users (
    id     INTEGER PRIMARY KEY,
    name   TEXT NOT NULL,
    school TEXT NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 24)
INSERT INTO users (id, name, school)
SELECT i, 'student ' || i, CASE i % 3 WHEN 0 THEN 'Minato' WHEN 1 THEN 'Sapporo' ELSE 'Fukuoka' END
FROM n;

CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    kind       TEXT    NOT NULL,
    points     REAL    NOT NULL,
    created_at TEXT    NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
INSERT INTO events (id, user_id, kind, points, created_at)
SELECT
    i,
    1 + (i * 7 + i / 30) % 24,
    CASE i % 4 WHEN 0 THEN 'login' WHEN 3 THEN 'hint' ELSE 'answer' END,
    CASE i % 4 WHEN 0 THEN 0 ELSE (i * 13) % 10 END,
    strftime('%Y-%m-%dT%H:%M:%S', 'now', '+9 hours', '-' || (i % 30) || ' days',
             '-' || ((i * 37) % 1440) || ' minutes') || '+09:00'
FROM n;
