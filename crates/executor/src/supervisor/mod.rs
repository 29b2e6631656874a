//! Supervised execution: every command attempt runs under a supervisor process of its own
//! (`ferry supervise`), as Nomad's executor and containerd's shim do, so that the task outlives
//! the engine.
//!
//! The handshake closes every window in which a process could exist that recovery cannot find:
//!
//! 1. the engine starts the supervisor ([`Launcher::spawn`]); it waits on standard input;
//! 2. the engine records the supervisor's identity ([`SupervisorId`]: host, boot, pid, start
//!    time, attempt folder, marker) in the store, in the same transaction that claims the task;
//! 3. only then does the engine send the go-ahead ([`Pending::start`]) and the command starts.
//!    If the engine dies before, standard input closes and the supervisor exits with nothing run.
//!
//! The supervisor writes output as it comes and the result ([`protocol`]); the engine
//! watches its child ([`Supervised::ended`]), or after a restart reattaches
//! ([`Supervised::reattach`]) or takes the result that was written while it was down. Every
//! process of an attempt carries a marker in its environment ([`MARKER_VARIABLE`]), so what a
//! lost attempt left behind can be stopped ([`stop_remaining`]) even if it left its group.

mod launch;
mod procfs;
pub mod protocol;
mod shim;

pub use launch::{Ended, Launcher, Pending, Spares, Supervised, SupervisorId, remove_attempt_dir};
pub use procfs::{
    CommandProcess, MARKER_VARIABLE, boot_id, host_name, kill_recorded_group, own_start_ticks,
    stop_remaining,
};
pub use protocol::{AttemptResult, AttemptSpec, Leftovers};
pub use shim::{StopRequest, execute, main, serve};

#[cfg(test)]
mod tests;
