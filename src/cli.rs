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
    /// Run a benchmark and print its figures.
    #[command(subcommand)]
    Bench(BenchCommand),
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
pub(crate) enum ConfigCommand {
    /// Print the effective configuration (defaults < file < environment), secrets masked.
    Show,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
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
