//! The `taskswarm` command: run a peer, submit tasks, inspect the swarm.

#![allow(clippy::print_stdout)] // this is the command's own output

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = cli::Args::parse();
    match cli::run(args).await {
        Ok(code) => code,
        // `taskswarm task list | head`: the reader has what it wanted.
        Err(error) if cli::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
