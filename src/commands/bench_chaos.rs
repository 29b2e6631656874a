//! `ferry bench chaos`: starts `ferry serve`, kills it with SIGKILL at a random moment (a third
//! of the time within the first 150 ms of an attempt's command, a third within the daemon's
//! first 150 ms, a third anywhere in its first 1.5 s), restarts it at once, again and again;
//! then lets a last daemon finish and checks the result against exact oracles: a ledger that
//! every command appends to when it starts and ends (`start|end,run,task,try,pid,time`), the
//! store, and the process table.
//!
//! It prints runs lost, attempts overlapping, commands executed more than once and orphans
//! left; the target is 0, 0, 0, 0. The exit code is 1 if any is not.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use ferry_store::{OpenMode, RunFilter, Store};
use serde::Serialize;

use super::engine::block_on;

/// How long the last daemon may take to finish every run.
const FINISH_WITHIN: Duration = Duration::from_secs(300);

/// What the trial found.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Findings {
    backend: String,
    kills: usize,
    kills_within_150ms_of_an_attempt: usize,
    runs: usize,
    runs_lost: usize,
    attempts: usize,
    attempts_overlapping: usize,
    commands_executed_more_than_once: usize,
    attempts_without_end: usize,
    orphans_left: usize,
    seconds: f64,
    /// For each run that did not succeed, its last task events (state, cause, detail) and the
    /// daemon's last lines: what to look at when an oracle fails.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    why_lost: Vec<String>,
}

impl Findings {
    fn clean(&self) -> bool {
        self.runs_lost == 0
            && self.attempts_overlapping == 0
            && self.commands_executed_more_than_once == 0
            && self.orphans_left == 0
            && self.attempts_without_end == 0
    }
}

pub(crate) fn run(
    kills: usize,
    runs: Option<usize>,
    database_url: Option<&str>,
    json: bool,
) -> Result<ExitCode> {
    let runs = runs.unwrap_or(kills.max(6));
    let dir = tempfile::tempdir().context("cannot create a temporary folder")?;
    let tag = format!("{:08x}", fastrand::u32(..));
    let dag_id = format!("chaos_{tag}");
    let project = Project::create(dir.path(), &dag_id, runs, database_url)?;
    let started = Instant::now();
    let mut findings = Findings {
        backend: if database_url.is_some() {
            "PostgreSQL".to_string()
        } else {
            "SQLite".to_string()
        },
        kills,
        runs,
        ..Findings::default()
    };
    if !json {
        out!(
            "ferry bench chaos ({}): {kills} kills of `ferry serve`, {runs} runs of {} tasks",
            findings.backend,
            TASKS
        );
    }
    for kill in 0..kills {
        let mut daemon = project.serve()?;
        match kill % 3 {
            0 => {
                // Kill within the first 150 ms of the next attempt to start.
                let seen = project.ledger_starts();
                let deadline = Instant::now() + Duration::from_secs(3);
                while project.ledger_starts() == seen && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if project.ledger_starts() > seen {
                    findings.kills_within_150ms_of_an_attempt += 1;
                }
                std::thread::sleep(Duration::from_millis(fastrand::u64(0..150)));
            }
            1 => std::thread::sleep(Duration::from_millis(fastrand::u64(0..150))),
            _ => std::thread::sleep(Duration::from_millis(fastrand::u64(0..1500))),
        }
        daemon.kill().context("cannot kill the daemon")?;
        daemon.wait().context("cannot reap the daemon")?;
    }
    let mut last = project.serve()?;
    let ended = block_on(project.wait_for_runs(runs));
    let _ = Command::new("kill")
        .args(["-TERM", &last.id().to_string()])
        .status();
    let _ = last.wait();
    let states =
        ended.with_context(|| format!("the daemon's output: {}", project.log.display()))?;
    findings.runs_lost = runs.saturating_sub(states.iter().filter(|s| *s == "success").count());
    if findings.runs_lost > 0 {
        findings.why_lost = block_on(project.why_lost())?;
    }
    // Leftovers are stopped by their supervisor at the end of each task: give the last ones
    // a moment, then look.
    std::thread::sleep(Duration::from_millis(500));
    findings.orphans_left =
        processes_with(&format!("FERRY_DAG_ID={dag_id}")) + supervisors_of(&project.dir);
    project.check_ledger(&mut findings)?;
    findings.seconds = started.elapsed().as_secs_f64();
    if json {
        out!("{}", serde_json::to_string(&findings)?);
    } else {
        let rows = [
            ("runs lost", findings.runs_lost),
            ("attempts overlapping", findings.attempts_overlapping),
            (
                "commands executed more than once",
                findings.commands_executed_more_than_once,
            ),
            (
                "attempts started but never ended",
                findings.attempts_without_end,
            ),
            ("orphans left", findings.orphans_left),
        ];
        for (what, count) in rows {
            out!("  {what:<40} {count}");
        }
        out!(
            "  ({} attempts; {} kills within 150 ms of an attempt's start; {:.1} s)",
            findings.attempts,
            findings.kills_within_150ms_of_an_attempt,
            findings.seconds
        );
    }
    Ok(if findings.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Tasks per run: six without retries that sleep and leave a background process behind, one
/// that fails its first try (and has retries), and a `noop` after them.
const TASKS: usize = 8;

struct Project {
    dir: PathBuf,
    ledger: PathBuf,
    log: PathBuf,
    url: String,
    dag_id: String,
}

impl Project {
    fn create(dir: &Path, dag_id: &str, runs: usize, database_url: Option<&str>) -> Result<Self> {
        let dags = dir.join("dags");
        std::fs::create_dir_all(&dags)?;
        let ledger = dir.join("ledger.csv");
        let url = database_url.map_or_else(
            || format!("sqlite://{}", dir.join(".ferry/ferry.db").display()),
            str::to_string,
        );
        let mut config = String::from(
            "[dags]\nfolders = [\"dags\"]\n[engine]\nheartbeat_interval_secs = 1\nheartbeat_timeout_secs = 3\nshutdown_grace_secs = 5\nreload_interval_secs = 60\nparallelism = 16\n",
        );
        if let Some(url) = database_url {
            config.push_str(&format!("database_url = {url:?}\n"));
        }
        std::fs::write(dir.join("ferry.toml"), config)?;
        let start = chrono::NaiveDate::from_ymd_opt(2026, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .context("start date")?;
        let end = start + chrono::Duration::hours(i64::try_from(runs.max(1) - 1)?);
        let line = |what: &str| {
            format!(
                "echo \"{what},$FERRY_RUN_ID,$FERRY_TASK_ID,$FERRY_TRY_NUMBER,$$,$(date +%s%N)\" >> {}",
                ledger.display()
            )
        };
        let mut text = format!(
            "id: {dag_id}\nschedule: '0 * * * *'\ntimezone: UTC\nstart_date: {}\nend_date: {}\ncatchup: true\nmax_active_runs: 2\ntasks:\n",
            start.format("%Y-%m-%dT%H:%M"),
            end.format("%Y-%m-%dT%H:%M")
        );
        let mut workers = Vec::new();
        for index in 0..TASKS - 2 {
            let seconds = 0.2 + 0.15 * index as f64;
            // No retries: a kill that cost a try would fail its run.
            text.push_str(&format!(
                "  - id: w{index}\n    type: command\n    command: '{}; sleep 300 & sleep {seconds:.2}; {}'\n",
                line("start"),
                line("end")
            ));
            workers.push(format!("w{index}"));
        }
        text.push_str(&format!(
            "  - id: flaky\n    type: command\n    command: '{}; sleep 0.3; {}; [ \"$FERRY_TRY_NUMBER\" != 1 ]'\n    retries: 2\n    retry_delay: 0s\n",
            line("start"),
            line("end")
        ));
        workers.push("flaky".to_string());
        text.push_str(&format!(
            "  - {{id: join, type: noop, depends_on: [{}]}}\n",
            workers.join(", ")
        ));
        std::fs::write(dags.join(format!("{dag_id}.yaml")), text)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ledger,
            log: dir.join("serve.log"),
            url,
            dag_id: dag_id.to_string(),
        })
    }

    /// Starts `ferry serve` in the project, its output appended to the log.
    fn serve(&self) -> Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("FERRY")) {
            command.env_remove(name);
        }
        command.spawn().context("cannot start `ferry serve`")
    }

    /// How many attempts have started so far.
    fn ledger_starts(&self) -> usize {
        std::fs::read_to_string(&self.ledger)
            .map(|text| text.lines().filter(|l| l.starts_with("start,")).count())
            .unwrap_or(0)
    }

    /// The states of the DAG's runs once there are `runs` of them and all have ended.
    async fn wait_for_runs(&self, runs: usize) -> Result<Vec<String>> {
        let deadline = Instant::now() + FINISH_WITHIN;
        loop {
            if let Ok(store) = Store::open_with(&self.url, OpenMode::Existing).await {
                let found = store
                    .runs(&RunFilter {
                        dag_id: Some(self.dag_id.clone()),
                        limit: Some(10_000),
                        ..RunFilter::default()
                    })
                    .await?;
                store.close().await;
                let ended = found
                    .iter()
                    .filter(|run| run.state().is_ok_and(|s| s.is_terminal()))
                    .count();
                if found.len() >= runs && ended == found.len() {
                    return Ok(found.into_iter().map(|run| run.state).collect());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the runs did not all end within {}s",
                    FINISH_WITHIN.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The events of the runs that did not succeed, and the daemon's last lines.
    async fn why_lost(&self) -> Result<Vec<String>> {
        let store = Store::open_with(&self.url, OpenMode::Existing).await?;
        let runs = store
            .runs(&RunFilter {
                dag_id: Some(self.dag_id.clone()),
                limit: Some(10_000),
                ..RunFilter::default()
            })
            .await?;
        let mut why = Vec::new();
        for run in runs.iter().filter(|r| r.state != "success") {
            for event in store.events(&run.run_id).await? {
                why.push(format!(
                    "{} {} try {:?}: {:?} -> {} ({}: {})",
                    run.run_id,
                    event.task_id.as_deref().unwrap_or("run"),
                    event.try_number,
                    event.from_state,
                    event.to_state,
                    event.cause,
                    event.detail.lines().next().unwrap_or_default()
                ));
            }
        }
        store.close().await;
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        why.extend(
            lines[lines.len().saturating_sub(40)..]
                .iter()
                .map(|line| format!("daemon: {line}")),
        );
        Ok(why)
    }

    /// Reads the ledger: attempts, overlaps, commands run more than once, attempts never ended.
    fn check_ledger(&self, findings: &mut Findings) -> Result<()> {
        let mut attempts: BTreeMap<(String, String), BTreeMap<u32, Seen>> = BTreeMap::new();
        let file = std::fs::File::open(&self.ledger).context("no ledger: nothing ran")?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line?;
            let fields: Vec<&str> = line.split(',').collect();
            let [what, run, task, tries, _pid, at] = fields[..] else {
                bail!("a torn ledger line: {line:?}");
            };
            let at: u128 = at
                .parse()
                .with_context(|| format!("ledger time in {line:?}"))?;
            let try_number: u32 = tries.parse().with_context(|| format!("try in {line:?}"))?;
            let entry = attempts
                .entry((run.to_string(), task.to_string()))
                .or_default()
                .entry(try_number)
                .or_insert((0, at, None));
            match what {
                "start" => {
                    entry.0 += 1;
                    entry.1 = entry.1.min(at);
                }
                "end" => entry.2 = Some(entry.2.map_or(at, |end: u128| end.max(at))),
                other => bail!("unknown ledger entry {other:?}"),
            }
        }
        for ((_, task), tries) in &attempts {
            // Each command runs once, under one try; only the flaky task runs twice by design.
            let expected_tries = if task == "flaky" { 2 } else { 1 };
            findings.commands_executed_more_than_once += tries.len().saturating_sub(expected_tries);
            let mut previous_end: Option<Option<u128>> = None;
            for (start_count, start, end) in tries.values() {
                findings.attempts += start_count;
                findings.commands_executed_more_than_once += start_count.saturating_sub(1);
                if end.is_none() {
                    findings.attempts_without_end += 1;
                }
                if let Some(previous) = previous_end
                    && previous.is_none_or(|previous| previous > *start)
                {
                    findings.attempts_overlapping += 1;
                }
                previous_end = Some(*end);
            }
        }
        Ok(())
    }
}

/// What the ledger says of one try of one task: how often it started, when it first started,
/// when it last ended.
type Seen = (usize, u128, Option<u128>);

/// Live `ferry supervise` processes of attempts under `dir` (none may outlive the last daemon:
/// its spares end with it, and every attempt has ended).
fn supervisors_of(dir: &Path) -> usize {
    let needle = dir.display().to_string();
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return 0;
    };
    proc.flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|cmdline| {
                let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                words.get(1) == Some(&&b"supervise"[..])
                    && words
                        .get(2)
                        .is_some_and(|folder| folder.starts_with(needle.as_bytes()))
            })
        })
        .count()
}

/// Live processes whose environment holds `entry` (`NAME=value`).
fn processes_with(entry: &str) -> usize {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return 0;
    };
    proc.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| {
            let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let zombie = state
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            !zombie
                && std::fs::read(e.path().join("environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == entry.as_bytes()))
        })
        .count()
}
