//! The command line: every subcommand and flag, with its help text.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// ferry: DAGs in YAML, run on time, honest about deadlines.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    /// Configuration file (default: $FERRY_CONFIG, else ./ferry.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// The environment whose connections DAGs use (default: $FERRY_ENV, else `dev`).
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) env: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check DAG files and report every problem of every file (exit 1 on any error).
    Validate(ValidateArgs),
    /// List DAGs or show one.
    #[command(subcommand)]
    Dags(DagsCommand),
    /// Print a DAG's next runs with their data intervals.
    Schedule(ScheduleArgs),
    /// Print the JSON Schema of DAG files.
    Schema,
    /// Show the effective configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// The connections of the environment in effect (`--env`).
    #[command(subcommand)]
    Connections(ConnectionsCommand),
    /// Reverse syncs: see what one would change.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Run the daemon: schedule the DAGs and run their tasks (stop with SIGTERM or Ctrl-C).
    Serve(ServeArgs),
    /// Run one DAG run in the foreground with live progress; exit 0 only on success.
    Run(RunArgs),
    /// Create and run the runs of a DAG for a range of dates.
    Backfill(BackfillArgs),
    /// List runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Print the log of a task's attempt.
    Logs(LogsArgs),
    /// Trigger a run through the daemon's HTTP API (`ferry serve`), at once.
    Trigger(TriggerArgs),
    /// Act on task instances.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Run a benchmark and print its figures.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Supervise one command attempt (started by the engine; not for people).
    #[command(hide = true)]
    Supervise {
        /// The attempt folder.
        dir: PathBuf,
    },
}

/// Output format of reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people.
    #[default]
    Text,
    /// For programs and CI.
    Json,
}

/// Options shared by the commands that read DAG files.
#[derive(Debug, Args)]
pub(crate) struct DagSource {
    /// Take "now" to be this RFC 3339 instant (for the DST look-ahead and upcoming runs).
    #[arg(long, value_name = "TIME")]
    pub(crate) now: Option<DateTime<Utc>>,
}

#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// DAG files or folders (default: the configured DAG folders).
    pub(crate) paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
    /// Fail on warnings too.
    #[arg(long)]
    pub(crate) deny_warnings: bool,
    /// Also list, for every scheduled DAG, each daylight-saving gap or overlap its schedule
    /// meets in the next year and what ferry will do.
    #[arg(long)]
    pub(crate) dst: bool,
    /// Also check what only the connections can: BigQuery dry-runs every `query` task's SQL,
    /// rendered for the DAG's latest interval (errors fail validation; bytes are printed).
    #[arg(long)]
    pub(crate) connect: bool,
    #[command(flatten)]
    pub(crate) source: DagSource,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DagsCommand {
    /// List the DAGs that load without errors.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        #[command(flatten)]
        source: DagSource,
    },
    /// Pause a DAG: it gets no new scheduled runs; runs already made go on.
    Pause {
        /// The DAG's id.
        id: String,
        #[command(flatten)]
        reason: ReasonArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Unpause a DAG: scheduling resumes (catch-up DAGs make the runs they missed).
    Unpause {
        /// The DAG's id.
        id: String,
        #[command(flatten)]
        reason: ReasonArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Show a DAG: settings, tasks and edges, or its graph.
    Show {
        /// The DAG's id.
        id: String,
        /// Print only the graph, as Mermaid or Graphviz DOT.
        #[arg(long, value_enum)]
        graph: Option<GraphFormat>,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        #[command(flatten)]
        source: DagSource,
    },
}

/// Graph renderings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormat {
    /// A Mermaid flowchart (GitHub and most wikis render it).
    Mermaid,
    /// Graphviz DOT (`dot -Tsvg`).
    Dot,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    /// The DAG's id.
    pub(crate) id: String,
    /// How many runs.
    #[arg(short = 'n', long = "count", default_value_t = 5)]
    pub(crate) count: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) source: DagSource,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConnectionsCommand {
    /// The connections of the environment in effect, passwords masked.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// A real round trip to a connection (connect and query), with what failed and what to
    /// check.
    Test {
        /// The connection's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SyncCommand {
    /// Show what a `reverse_sync` task would insert, update, delete, leave and reject in its
    /// target, without writing anything (the sync runs in a transaction that is rolled back).
    Plan {
        /// The DAG's id.
        dag: String,
        /// The `reverse_sync` task.
        task: String,
        /// Logical date: the data interval starting on this date (default: the latest
        /// complete one).
        #[arg(long, value_name = "DATE")]
        date: Option<String>,
        /// Plan "as if it were" this RFC 3339 instant.
        #[arg(long, value_name = "TIME")]
        now: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Print the effective configuration (defaults < file < environment), secrets masked.
    Show,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Kill `ferry serve` with SIGKILL at random moments and restart it, again and again;
    /// print runs lost, attempts overlapping, commands executed more than once, orphans left.
    Chaos {
        /// How many times to kill the daemon.
        #[arg(long, default_value_t = 50)]
        kills: usize,
        /// Runs of the trial DAG (default: as many as kills, at least 6).
        #[arg(long)]
        runs: Option<usize>,
        /// An empty PostgreSQL database to use instead of a temporary SQLite file.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Print the findings as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Move generated rows from PostgreSQL into PostgreSQL (and BigQuery) with the transfer
    /// task's code; print rows per second and peak memory per size.
    Transfer {
        /// The PostgreSQL database to use (it gets tables `ferry_bench_source` and
        /// `ferry_bench_target`).
        #[arg(
            long,
            value_name = "URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        postgres: String,
        /// A BigQuery endpoint (an emulator) to transfer into as well.
        #[arg(long, value_name = "URL")]
        bigquery: Option<String>,
        /// Row counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [100_000, 1_000_000])]
        rows: Vec<usize>,
    },
    /// Time `reverse_sync`: a first full load of generated rows into PostgreSQL (beside
    /// PostgreSQL's own COPY of them) and MariaDB, a rerun after 1% changed, peak memory.
    Sync {
        /// The PostgreSQL database to use (tables `ferry_bench_sync_source` and
        /// `ferry_bench_sync_target`, and ferry's sync tables).
        #[arg(
            long,
            value_name = "URL",
            default_value = "postgres://postgres@127.0.0.1:5432/test"
        )]
        postgres: String,
        /// A MariaDB/MySQL database to sync into as well.
        #[arg(long, value_name = "URL")]
        mysql: Option<String>,
        /// How many rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// How many times to run every step; the summary gives each step's median and range.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// The HTTP API under load: listing runs and reading a run at a fixed rate over a filled
    /// store, with latency percentiles, and the engine's W1 alone and under that load.
    Api {
        /// A PostgreSQL server to run on (a scratch database is made there and dropped);
        /// default: a temporary SQLite file.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// Runs in the store (over 100 DAGs, 10 task instances each).
        #[arg(long, default_value_t = 100_000)]
        runs: usize,
        /// Requests per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// For how long.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Run the engine workloads W1–W5 and print a table.
    Engine {
        /// State database (default: a temporary SQLite file).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Parse and validate generated DAG files; print wall time and peak memory.
    Validate {
        /// How many DAG files.
        #[arg(long, default_value_t = 1000)]
        dags: usize,
        /// Tasks per DAG.
        #[arg(long, default_value_t = 10)]
        tasks: usize,
        /// Timed repetitions (the median is reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// Where the run state lives.
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    /// State database: `postgres://…`, a PostgreSQL `key=value …` string, or a SQLite path;
    /// default from the configuration.
    #[arg(long, value_name = "URL")]
    pub(crate) database_url: Option<String>,
}

/// What a stop request does to running commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum OnStop {
    /// Leave them to their supervisors and exit at once; the next start reattaches.
    Detach,
    /// Let them finish within the grace period, then stop them.
    Drain,
}

/// Options of the commands that run an engine.
#[derive(Debug, Args)]
pub(crate) struct StopArgs {
    /// On SIGTERM or Ctrl-C (default: `engine.on_stop`); a second signal stops running
    /// commands at once.
    #[arg(long, value_enum, value_name = "MODE")]
    pub(crate) on_stop: Option<OnStop>,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    #[command(flatten)]
    pub(crate) stop: StopArgs,
    /// Where the HTTP API answers, `host:port` (default: `[api] listen`, 127.0.0.1:8080; port
    /// 0 picks a free one, printed at start).
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) listen: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The DAG's id.
    pub(crate) dag: String,
    /// Logical date: the data interval starting on this date (default: the latest complete one).
    #[arg(long, value_name = "DATE")]
    pub(crate) date: Option<String>,
    /// Override a parameter (`--param table=scores`); repeat for more.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// Run "as if it were" this RFC 3339 instant.
    #[arg(long, value_name = "TIME")]
    pub(crate) now: Option<DateTime<Utc>>,
    /// Run for --date even if its interval has not ended yet or begins before the DAG's
    /// start_date.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    #[command(flatten)]
    pub(crate) stop: StopArgs,
}

/// Which daemon to talk to over HTTP, and with which token.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// The daemon's API (`http://127.0.0.1:8080`); default: the one `ferry serve` serves on
    /// this data directory.
    #[arg(long, env = "FERRY_SERVER", value_name = "URL")]
    pub(crate) server: Option<String>,
    /// The bearer token; default: the admin token `ferry serve` keeps in the data directory.
    #[arg(
        long,
        env = "FERRY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub(crate) token: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    /// The DAG's id.
    pub(crate) dag: String,
    /// Logical date: the data interval starting on this date (default: the latest complete one).
    #[arg(long, value_name = "DATE")]
    pub(crate) date: Option<String>,
    /// Override a parameter (`--param table=scores`); repeat for more.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,
    /// Run for --date even if its interval has not ended yet or begins before the DAG's
    /// start_date.
    #[arg(long)]
    pub(crate) force: bool,
    /// Why, for the event log.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// A key for this request: triggering again with the same key gives the same run, never a
    /// second one (safe to retry).
    #[arg(long, value_name = "KEY")]
    pub(crate) idempotency_key: Option<String>,
    /// Wait until the run ends, showing its tasks as they change; the exit code is 0 only if
    /// it succeeded.
    #[arg(long)]
    pub(crate) wait: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BackfillArgs {
    /// The DAG's id.
    pub(crate) dag: String,
    /// First date (in the DAG's time zone).
    #[arg(long, value_name = "DATE")]
    pub(crate) from: String,
    /// Last date, included.
    #[arg(long, value_name = "DATE")]
    pub(crate) to: String,
    /// Runs at once (default: the DAG's max_active_runs).
    #[arg(long, value_name = "N")]
    pub(crate) parallel: Option<u32>,
    /// Also make runs for intervals that have not ended yet, or that begin before the DAG's
    /// start_date.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
    #[command(flatten)]
    pub(crate) stop: StopArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Runs, newest logical date first.
    List {
        /// Only this DAG's runs.
        #[arg(long)]
        dag: Option<String>,
        /// Only runs in this state (queued, running, success, failed).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// One run: every task with its state, try, times, worker and external job, the last lines
    /// of each failed task's log, and the interventions on it.
    Show {
        /// The run's id, or a prefix of it that only one run has.
        run_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Rerun from failed: clear every failed or upstream_failed task and what depends on them.
    Rerun {
        /// The run's id, or a prefix of it that only one run has.
        run_id: String,
        #[command(flatten)]
        rerun: RerunArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// The run's id, or a prefix of it that only one run has.
    pub(crate) run_id: String,
    /// The task's id.
    pub(crate) task_id: String,
    /// The attempt (default: the latest).
    #[arg(long = "try", value_name = "N")]
    pub(crate) try_number: Option<i64>,
    /// Keep printing a running attempt's output as it comes, until it ends.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
}

/// Who intervenes and why, recorded with every intervention.
#[derive(Debug, Args)]
pub(crate) struct ReasonArgs {
    /// Why (recorded with the intervention, shown by `ferry runs show`).
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
}

/// Which tasks of a run to clear, and how.
#[derive(Debug, Args)]
pub(crate) struct ClearArgs {
    /// The run's id, or a prefix of it that only one run has.
    pub(crate) run_id: String,
    /// The tasks to clear (default: every task of the run).
    pub(crate) task_ids: Vec<String>,
    /// Clear the tasks downstream of them too.
    #[arg(long)]
    pub(crate) downstream: bool,
    /// Clear the tasks upstream of them too.
    #[arg(long)]
    pub(crate) upstream: bool,
    /// Of those, clear only the failed and upstream_failed ones.
    #[arg(long)]
    pub(crate) only_failed: bool,
    #[command(flatten)]
    pub(crate) rerun: RerunArgs,
}

/// Options of every clear and rerun.
#[derive(Debug, Args)]
pub(crate) struct RerunArgs {
    /// Show what would be cleared; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Go on with the DAG version loaded now instead of the one the run started with.
    #[arg(long)]
    pub(crate) latest_version: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub(crate) format: Format,
    #[command(flatten)]
    pub(crate) reason: ReasonArgs,
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TasksCommand {
    /// Clear tasks of a run so that they run again (with their full retries); a running one is
    /// stopped first. An ended run is queued again.
    Clear(ClearArgs),
    /// Set a task's state by hand; its downstream tasks then follow their trigger rules.
    Mark {
        /// The run's id, or a unique prefix of it.
        run_id: String,
        /// The task's id.
        task_id: String,
        /// success, failed or skipped.
        state: String,
        #[command(flatten)]
        reason: ReasonArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
}
