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

-- The dashboard's side of the application (dags/user-facing/dashboard_daily.yaml): 300
-- schools, 6 grades of 2 classes each, 12 students a class (43,200 students), and two days of
-- learning sessions and answers up to the moment the database is made, so that the latest
-- complete day always has a day of events.
CREATE TABLE schools (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
INSERT INTO schools (id, name) SELECT i, 'school ' || i FROM n;

CREATE TABLE students (
    id        INTEGER PRIMARY KEY,
    school_id INTEGER NOT NULL REFERENCES schools (id),
    grade     INTEGER NOT NULL,
    class_id  INTEGER NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 43200)
INSERT INTO students (id, school_id, grade, class_id)
SELECT i,
       (i - 1) / 144 + 1,
       ((i - 1) % 144) / 24 + 1,
       ((i - 1) / 144) * 12 + (((i - 1) % 144) / 24) * 2 + (((i - 1) % 24) / 12) + 1
FROM n;

CREATE TABLE usage_events (
    id         INTEGER PRIMARY KEY,
    student_id INTEGER NOT NULL REFERENCES students (id),
    minutes    INTEGER NOT NULL,
    started_at TEXT    NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 130000)
INSERT INTO usage_events (id, student_id, minutes, started_at)
SELECT i, 1 + (i * 7919) % 43200, 5 + (i * 13) % 55,
       strftime('%Y-%m-%dT%H:%M:%S', 'now', '+9 hours', '-' || (i % 2880) || ' minutes',
                '-' || ((i * 7) % 60) || ' seconds') || '+09:00'
FROM n;

CREATE TABLE score_events (
    id          INTEGER PRIMARY KEY,
    student_id  INTEGER NOT NULL REFERENCES students (id),
    points      INTEGER NOT NULL,
    answered_at TEXT    NOT NULL
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 350000)
INSERT INTO score_events (id, student_id, points, answered_at)
SELECT i, 1 + (i * 104729) % 43200, (i * 31) % 11,
       strftime('%Y-%m-%dT%H:%M:%S', 'now', '+9 hours', '-' || ((i * 3) % 2880) || ' minutes',
                '-' || ((i * 11) % 60) || ' seconds') || '+09:00'
FROM n;

-- What the dashboard reads: one row per school, grade, class and day, written by ferry's
-- reverse sync.
CREATE TABLE dashboard_class_daily (
    school_id       INTEGER NOT NULL,
    grade           INTEGER NOT NULL,
    class_id        INTEGER NOT NULL,
    day             TEXT    NOT NULL,
    active_students INTEGER NOT NULL,
    sessions        INTEGER NOT NULL,
    minutes         INTEGER NOT NULL,
    answers         INTEGER NOT NULL,
    points          INTEGER NOT NULL,
    PRIMARY KEY (school_id, grade, class_id, day)
);
