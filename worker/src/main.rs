//! The `webhook-worker` binary: parse, run the command, map the result to an exit code
//! (0 success, 1 failure, 2 usage — clap exits with 2 on usage errors itself).

use std::process::ExitCode;

use clap::Parser as _;
use webhook_worker::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
