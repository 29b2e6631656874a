//! `ferry`: a workflow orchestration daemon for data platforms. This binary is the only entry
//! point; each subcommand lives in its own module under `commands/`.

#[macro_use]
mod output;
mod cli;
mod commands;
mod progress;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc: rows are read on one thread and written (and freed) on another, which glibc's
/// allocator serialises on its arena locks (a fifth of a sync's time went to that lock).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The engine starts a supervisor per command attempt: it skips the command-line parser,
    // which would cost it more than the rest of its start.
    let mut args = std::env::args_os().skip(1);
    if let (Some(command), Some(dir), None) = (args.next(), args.next(), args.next())
        && command == "supervise"
    {
        return commands::supervise(std::path::Path::new(&dir));
    }
    let cli = cli::Cli::parse();
    let config_file = cli.config.clone();
    let env_name = cli.env.clone();
    match commands::run(cli) {
        Ok(code) => code,
        Err(error) => {
            // Whatever the error quotes (a URL, a DSN, a command line), no secret shows: neither
            // a configured one nor a password in a URL or DSN.
            let secrets = ferry_config::Config::load(&ferry_config::Sources::from_process(
                config_file,
                env_name,
            ))
            .map(|config| config.secrets())
            .unwrap_or_default();
            say!("ferry: error: {}", secrets.redact(&format!("{error:#}")));
            ExitCode::from(2)
        }
    }
}
