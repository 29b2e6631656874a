//! What `/proc` says about processes: a process's start time (which, with its pid and the boot
//! id, names it uniquely), whether it is still the same process, the live members of a process
//! group, and the processes that carry an attempt's marker in their environment.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// The environment variable that marks every process of an attempt (inherited by its
/// children, even those that leave the process group), so that what an attempt left behind can
/// be found after its supervisor is gone.
pub const MARKER_VARIABLE: &str = "FERRY_ATTEMPT_MARKER";

/// The fields of `/proc/<pid>/stat` that ferry reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    /// `R`, `S`, `Z`, ...
    pub(crate) state: char,
    /// Process group.
    pub(crate) pgrp: i32,
    /// Start time in clock ticks after boot.
    pub(crate) start_ticks: u64,
}

impl Stat {
    /// True for a process that runs (not a zombie waiting to be reaped, nor dead).
    pub(crate) fn is_live(&self) -> bool {
        self.state != 'Z' && self.state != 'X'
    }
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist.
pub(crate) fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses: fields start after the last `)`.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// This boot of the machine (a pid and start time name a process only within one boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_string())
        .unwrap_or_default()
}

/// This machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// The start time of this process, in clock ticks after boot.
pub fn own_start_ticks() -> u64 {
    stat(std::process::id()).map_or(0, |s| s.start_ticks)
}

/// True while the process `pid` that started at `start_ticks` still runs (not a zombie).
pub(crate) fn is_running(pid: u32, start_ticks: u64) -> bool {
    stat(pid).is_some_and(|s| s.start_ticks == start_ticks && s.is_live())
}

/// Live (not zombie) processes of process group `pgid`.
pub(crate) fn group_members(pgid: u32) -> Vec<u32> {
    pids()
        .filter(|pid| {
            stat(*pid).is_some_and(|s| i64::from(s.pgrp) == i64::from(pgid) && s.is_live())
        })
        .collect()
}

/// Live processes whose environment carries `MARKER_VARIABLE=marker`.
pub(crate) fn marked(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_VARIABLE}={marker}");
    let own = std::process::id();
    pids()
        .filter(|pid| *pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
                environ
                    .split(|b| *b == 0)
                    .any(|entry| entry == needle.as_bytes())
            })
        })
        .filter(|pid| stat(*pid).is_some_and(|s| s.is_live()))
        .collect()
}

fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir(Path::new("/proc"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// Live descendants of this process (children, their children, ...), `except` left out. A
/// supervisor is a child subreaper, so what a command leaves behind (even after `setsid` or a
/// double fork) stays among its descendants.
pub(crate) fn own_descendants(except: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut stack = children_of(std::process::id());
    while let Some(pid) = stack.pop() {
        if found.contains(&pid) {
            continue;
        }
        stack.extend(children_of(pid));
        if pid != except && stat(pid).is_some_and(|s| s.is_live()) {
            found.push(pid);
        }
    }
    found
}

/// The children of `pid`, from every one of its threads.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// True when this process adopts its orphaned descendants (a supervisor that could set it).
pub(crate) fn is_child_subreaper() -> bool {
    nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Stops the live descendants of this process but `except`: SIGTERM, then SIGKILL to those
/// still alive after `grace`. Returns how many there were.
pub(crate) fn stop_descendants(except: u32, grace: Duration) -> usize {
    stop_all(|| own_descendants(except), grace)
}

/// The main process of an attempt's command, as its supervisor recorded it when it started
/// it: the leader of the command's process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandProcess {
    /// Its pid, which is also its process group's id.
    pub pid: u32,
    /// Its start time in clock ticks after boot.
    pub start_ticks: u64,
}

impl CommandProcess {
    /// True when signals to the group `pid` can only reach processes of this command: the
    /// leader is still this process, or it is gone (then its pid cannot have been given to
    /// anyone while members of its group live, so any member is one of the command's).
    pub(crate) fn group_is_ours(&self) -> bool {
        stat(self.pid).is_none_or(|s| s.start_ticks == self.start_ticks)
    }
}

/// SIGKILL to process group `pgid`, as the first release of ferry recorded it (`pgid:N`, with
/// no start time to check it by): what an attempt of that release left running is stopped when
/// this release recovers it.
pub fn kill_recorded_group(pgid: u32) {
    signal_group(pgid, Signal::SIGKILL);
}

/// Sends `signal` to a process group; false when it has no process left.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> bool {
    i32::try_from(pgid).is_ok_and(|pgid| killpg(Pid::from_raw(pgid), signal).is_ok())
}

/// Sends `signal` to one process; false when it is gone.
pub(crate) fn signal_process(pid: u32, signal: Signal) -> bool {
    i32::try_from(pid).is_ok_and(|pid| kill(Pid::from_raw(pid), signal).is_ok())
}

/// Stops every live process of an attempt's command group (if known, and only if that group is
/// still the attempt's: see [`CommandProcess`]) and every process marked with `marker`:
/// SIGTERM, then SIGKILL to those still alive after `grace`. Returns how many were found.
pub fn stop_remaining(command: Option<CommandProcess>, marker: &str, grace: Duration) -> usize {
    let pgid = command.filter(CommandProcess::group_is_ours).map(|c| c.pid);
    stop_all(
        || {
            let mut pids = pgid.map(group_members).unwrap_or_default();
            pids.extend(marked(marker));
            pids.sort_unstable();
            pids.dedup();
            pids
        },
        grace,
    )
}

/// SIGTERM to every process `found` lists, then SIGKILL to those it still lists after `grace`.
fn stop_all(found: impl Fn() -> Vec<u32>, grace: Duration) -> usize {
    let first = found();
    if first.is_empty() {
        return 0;
    }
    for pid in &first {
        signal_process(*pid, Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    loop {
        let left = found();
        if left.is_empty() {
            return first.len();
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SIGKILL until nothing is left: a process killed cannot start another, but one not yet
    // killed may have started one since the last look (a chain that keeps respawning itself).
    let give_up = std::time::Instant::now() + KILL_ROUNDS_FOR;
    loop {
        let left = found();
        if left.is_empty() || std::time::Instant::now() >= give_up {
            break;
        }
        for pid in left {
            signal_process(pid, Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    first.len()
}

/// How long SIGKILL rounds go on against processes that keep starting others.
const KILL_ROUNDS_FOR: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgrp: 4242,
                start_ticks: 987_654
            })
        );
    }

    #[test]
    fn this_process_is_running_and_named_by_its_start_time() {
        let own = std::process::id();
        let ticks = own_start_ticks();
        assert!(is_running(own, ticks));
        assert!(
            !is_running(own, ticks + 1),
            "another start time is another process"
        );
        assert!(!boot_id().is_empty());
    }
}
