//! How `ferry run` and `ferry serve` show what the engine does: one line per change, or, for
//! `ferry run` on a terminal, a board of the run's tasks redrawn in place.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use ferry_scheduler::Progress;

/// An observer for the engine.
pub(crate) type Observer = Box<dyn Fn(&Progress) + Send>;

/// One line per change: `time  run  task (try n)  state  detail`.
pub(crate) fn lines() -> Observer {
    Box::new(|progress: &Progress| out!("{}", line(progress)))
}

fn line(progress: &Progress) -> String {
    let task = match &progress.task_id {
        Some(task) => format!("{task} (try {})", progress.try_number),
        None => "run".to_string(),
    };
    let detail = progress.detail.lines().next().unwrap_or_default();
    format!(
        "{}  {}  {:<28} {:<16} {}",
        progress.at.format("%H:%M:%S%.3f"),
        progress.run_id,
        task,
        progress.state,
        detail
    )
}

/// For one run on a terminal: a board with a row per task (in the DAG's order), redrawn every
/// second while tasks run so that their elapsed time counts up; elsewhere, lines. The board is
/// fed by the engine, or by the store's events when another process executes the run, and
/// times come from those events, so it is true either way.
pub(crate) fn for_run(task_ids: Vec<String>) -> Observer {
    if !std::io::stdout().is_terminal() {
        return lines();
    }
    let board = Arc::new(Mutex::new(Board {
        order: task_ids,
        rows: HashMap::new(),
        run: String::new(),
        drawn: 0,
        ended: false,
    }));
    let ticking = board.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let mut board = ticking.lock().unwrap_or_else(PoisonError::into_inner);
            if board.ended {
                return;
            }
            if board.rows.values().any(|row| row.state == "running") {
                board.draw();
            }
        }
    });
    Box::new(move |progress: &Progress| {
        let mut board = board.lock().unwrap_or_else(PoisonError::into_inner);
        board.update(progress);
        board.draw();
    })
}

struct Row {
    state: String,
    try_number: i64,
    detail: String,
    since: DateTime<Utc>,
}

struct Board {
    order: Vec<String>,
    rows: HashMap<String, Row>,
    run: String,
    drawn: usize,
    /// The run ended: no more redrawing (what follows the board must stay below it).
    ended: bool,
}

impl Board {
    fn update(&mut self, progress: &Progress) {
        match &progress.task_id {
            Some(task) => {
                let detail = progress
                    .detail
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                self.rows.insert(
                    task.clone(),
                    Row {
                        state: progress.state.clone(),
                        try_number: progress.try_number,
                        detail,
                        since: progress.at,
                    },
                );
            }
            None => {
                self.run = format!("{} {}", progress.run_id, progress.state);
                self.ended = matches!(progress.state.as_str(), "success" | "failed");
            }
        }
    }

    fn draw(&mut self) {
        let mut out = std::io::stdout().lock();
        if self.drawn > 0 {
            // Back to the top of the previous drawing, and clear it.
            let _ = write!(out, "\x1b[{}A\x1b[J", self.drawn);
        }
        let _ = writeln!(out, "{}", self.run);
        for task in &self.order {
            let (mark, state, extra) = match self.rows.get(task) {
                Some(row) => {
                    let elapsed = if row.state == "running" {
                        let seconds = (Utc::now() - row.since).num_milliseconds().max(0);
                        format!(" {}", elapsed(seconds / 1000))
                    } else {
                        String::new()
                    };
                    let tries = if row.try_number > 1 {
                        format!(" (try {})", row.try_number)
                    } else {
                        String::new()
                    };
                    let detail =
                        if matches!(row.state.as_str(), "failed" | "up_for_retry" | "deferred") {
                            format!("  {}", row.detail)
                        } else {
                            String::new()
                        };
                    (
                        mark(&row.state),
                        row.state.as_str(),
                        format!("{tries}{elapsed}{detail}"),
                    )
                }
                None => ("·", "pending", String::new()),
            };
            let row = format!("  {mark} {task:<30} {state:<16}{extra}");
            let _ = writeln!(out, "{}", row.trim_end());
        }
        let _ = out.flush();
        self.drawn = self.order.len() + 1;
    }
}

/// `42s`, `3m07s`, `1h02m`.
fn elapsed(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn mark(state: &str) -> &'static str {
    match state {
        "success" => "✓",
        "failed" => "✗",
        "running" => "▶",
        "queued" => "…",
        "deferred" => "⏸",
        "up_for_retry" => "↻",
        "skipped" => "−",
        "upstream_failed" => "⊘",
        _ => "·",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_times_read_easily() {
        assert_eq!(elapsed(42), "42s");
        assert_eq!(elapsed(187), "3m07s");
        assert_eq!(elapsed(3720), "1h02m");
    }

    #[test]
    fn lines_name_the_run_task_try_and_state() {
        let progress = Progress {
            at: chrono::DateTime::UNIX_EPOCH,
            dag_id: "d".into(),
            run_id: "d__manual__x".into(),
            task_id: Some("load".into()),
            try_number: 2,
            state: "up_for_retry".into(),
            detail: "exited with code 1; retry in 60s\nmore".into(),
        };
        let text = line(&progress);
        assert!(
            text.starts_with("00:00:00.000  d__manual__x  load (try 2)"),
            "{text}"
        );
        assert!(
            text.ends_with("up_for_retry     exited with code 1; retry in 60s"),
            "{text}"
        );
    }
}
