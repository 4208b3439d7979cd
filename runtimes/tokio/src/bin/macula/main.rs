//! `macula`: run a mesh node (`macula node`), call, publish and subscribe
//! from the shell, or watch a local mesh of real nodes work (`macula demo`).
//!
//! Errors are one message on stderr and an exit code per kind of failure
//! (see [`failure::EXIT_CODES`]); bad flags are clap's usage errors (exit
//! code 2).

mod announced;
mod args;
mod client;
mod contact;
mod demo;
mod event_log;
mod failure;
mod gateway;
mod identity;
mod latency;
mod mesh;
mod payload;
mod peers;
mod progress;
mod run_node;
mod services;
mod settings;
mod stop;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::{Cli, Command};
use crate::failure::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("error: --log {:?} is not a log filter: {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    let outcome = match runtime {
        Ok(runtime) => runtime.block_on(dispatch(cli.command)),
        Err(e) => Err(Failure::other(format!(
            "cannot start the async runtime: {e}"
        ))),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_code()
        }
    }
}

/// Runs one command.
async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Node(args) => run_node::run(args).await,
        Command::Call(args) => client::call(args).await,
        Command::Publish(args) => client::publish(args).await,
        Command::Subscribe(args) => client::subscribe(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Keygen(args) => {
            let identity = identity::create(&args.file)?;
            println!("{}", identity.node_id());
            eprintln!("wrote a new identity to {}", args.file.display());
            Ok(())
        }
    }
}
