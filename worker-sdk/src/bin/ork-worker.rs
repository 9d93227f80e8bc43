//! `ork-worker`: runs any command as one ork task attempt.
//!
//! Started by an executor with the attempt in the environment (see the
//! `ork_worker` crate documentation). Exit codes, for the executor:
//!
//! - `0`: the attempt's fate is settled: its result (success or failure) was
//!   reported, or the server cancelled it or moved on to another attempt;
//! - `1`: the result was not reported (server unreachable for the whole
//!   retry budget, it refused the report, or a signal stopped the worker
//!   first);
//! - `2`: bad configuration (a missing or malformed variable).

use std::process::ExitCode;

use anyhow::Context as _;
use ork_worker::Error;
use ork_worker::launched::{self, LaunchConfig, Outcome};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
usage: ork-worker
       ork-worker install PATH   copy this binary to PATH (what a Kubernetes
                                 init container does to put it in a pod)

Runs one ork task attempt described by the environment:
  ORK_SERVER       the ork server URL, e.g. http://127.0.0.1:7400
  ORK_TASK_RUN_ID  the task run id
  ORK_ATTEMPT      the attempt number
  ORK_TOKEN        the attempt's token
optional:
  ORK_WORK_DIR            parent of the attempt directory (default: the temp dir)
  ORK_KEEP_WORK_DIR=1     keep the attempt directory afterwards
  ORK_KILL_GRACE_SECONDS  time between SIGTERM and SIGKILL (default 10)
  ORK_SPEC_STDIN=1        the attempt's spec (a protobuf TaskSpec) is on
                          stdin, so it is not fetched
  RUST_LOG                log filter (default: info)

exit codes: 0 result reported (even a task failure) or the attempt is no
longer this worker's, 1 not reported (could not, or stopped by a signal),
2 bad configuration";

/// Copies this executable to `to` (parents created, mode 0755): the worker
/// image needs no shell or `cp` of its own.
fn install(to: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let me = std::env::current_exe().context("cannot find this executable")?;
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::copy(&me, to)
        .with_context(|| format!("cannot copy {} to {}", me.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", to.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None => {}
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some("-V" | "--version") => {
            println!("ork-worker {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("install") if args.len() == 2 => {
            return match install(std::path::Path::new(&args[1])) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ork-worker: {e:#}");
                    ExitCode::from(1)
                }
            };
        }
        Some(other) => {
            eprintln!("ork-worker: unexpected argument {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    }

    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let config = match LaunchConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("ork-worker: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config) {
        // Nothing was reported: the executor that sees a non-zero exit
        // fails the attempt as lost at once, so it is retried.
        Ok(Outcome::Interrupted) => ExitCode::from(1),
        Ok(outcome) => {
            tracing::info!(?outcome, "attempt settled");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let bad_config = e
                .downcast_ref::<Error>()
                .is_some_and(|e| matches!(e, Error::InvalidUrl { .. } | Error::Config(_)));
            eprintln!("ork-worker: {e:#}");
            ExitCode::from(if bad_config { 2 } else { 1 })
        }
    }
}

fn run(config: LaunchConfig) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    Ok(runtime.block_on(launched::run(config))?)
}
