//! The `webhook-worker` binary: parse, set up logging, dispatch to a command, map the result to
//! an exit code (0 success, 1 failure, 2 usage — clap exits with 2 on usage errors itself).

use std::process::ExitCode;

use clap::Parser as _;
use webhook_worker::config::{Cli, Command, LogFormat, QueueCommand};
use webhook_worker::{cli, demo, shutdown, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => {
            telemetry::init(args.log_format);
            let settings = args.settings()?;
            webhook_worker::run(settings, shutdown::signal()).await
        }
        Command::Migrate(args) => cli::migrate(&args).await,
        Command::Endpoint(command) => cli::endpoint::run(command).await,
        Command::Delivery(command) => cli::delivery::run(command).await,
        Command::Queue(QueueCommand::Stats(args)) => cli::queue_stats(&args).await,
        Command::Enqueue(args) => cli::enqueue(&args).await,
        Command::Keys(command) => cli::keys::run(command).await,
        Command::Demo(args) => {
            telemetry::init(LogFormat::Pretty);
            demo::run(args).await
        }
    }
}
