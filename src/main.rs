//! The `wharf` binary: parses the command line and runs it. See [`wharf::cli`].

use std::process::ExitCode;

use clap::Parser as _;

mod allocator;

#[global_allocator]
static GLOBAL: allocator::MiMalloc = allocator::MiMalloc;

fn main() -> ExitCode {
    let cli = wharf::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(wharf::cli::run(cli)) {
        Ok(code) => ExitCode::from(code),
        // The reader of our output went away (`wharf jobs q | head -1`): nothing is wrong.
        Err(err) if wharf::cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
