//! ferry's integration tests: one test binary that drives the real `ferry` binary.
//! Each module covers one area; fixtures live under `tests/fixtures/`.

// Shared helpers: running the binary, fixtures, readable diffs.
mod util;

// `ferry validate` over the fixture corpus: exact diagnostics, exit codes, JSON output.
mod validate;

// `ferry dags`, `ferry schedule`, `ferry schema` and `ferry config`.
mod commands;

// The engine through the binary: `ferry run`, `serve`, `logs`, `tasks clear`, crash recovery.
mod engine;

// Issue 6: crash-proof execution (kill -9, one owner per store, folder and database faults,
// secrets, a huge run, stopping).
mod faults;

// Issue 7: an on-call engineer's interventions (clear, rerun, mark, pause) and what they show.
mod operations;

// Issue 8: connections per environment and the Forward tasks.
mod connectors;

// Issue 8: the Forward tasks against the emulators (and stubs of what they cannot do).
mod cloud;

// Issue 9: reverse sync into the application's databases.
mod sync;

// Issue 10: the HTTP API.
mod api;
