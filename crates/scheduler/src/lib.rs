//! ferry's engine: turns DAGs into runs and runs their tasks in the right order at the right
//! time, with every decision written to the store first so that a crash never loses a run.
//!
//! - [`clock`]: time is injected;
//! - [`due`]: which data intervals are due (catch-up semantics);
//! - [`trigger`]: trigger rules and how runs end;
//! - [`retry`]: retry delays with backoff and jitter;
//! - [`render`]: a task of a run rendered for execution;
//! - [`engine`]: the event-driven loop;
//! - [`logs`]: an attempt's log as it stands;
//! - [`operations`]: an operator's interventions (clear, rerun, mark), the same for every front end;
//! - [`manual`]: runs made by hand, at most once per idempotency key.

pub mod clock;
pub mod due;
pub mod engine;
pub mod logs;
pub mod manual;
pub mod operations;
pub mod render;
pub mod retry;
pub mod trigger;

pub use engine::{
    Engine, EngineConfig, LoadedDag, LoopGauges, Progress, Reload, Reloader, Shutdown, StopMode,
    worker_name,
};

/// What can stop the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),
    /// A supervisor could not be recorded or started.
    #[error(transparent)]
    Supervisor(#[from] ferry_executor::SupervisorError),
    /// A run was asked of a DAG that is not loaded.
    #[error("no DAG `{0}` is loaded")]
    UnknownDag(String),
}
