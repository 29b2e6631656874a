//! `ferry`: a workflow orchestration daemon for data platforms. This binary is the only entry
//! point; each subcommand lives in its own module under `commands/`.

mod cli;
mod commands;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // Whatever the error quotes (a URL, a DSN, a command line), no password shows.
            eprintln!(
                "ferry: error: {}",
                ferry_secrets::redact_text(&format!("{error:#}"))
            );
            ExitCode::from(2)
        }
    }
}
