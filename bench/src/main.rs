//! `ork-bench`: measures a real `ork server` (a child process of this one)
//! on SQLite and PostgreSQL, checks every run it measures, and writes the
//! table to `BENCHMARKS.md`.
//!
//! ```text
//! scripts/bench.sh [--quick] [--store sqlite|postgres|both] [--scenarios a,b,c,d,e,f,h,i,j] [--sustained]
//! scripts/bench.sh --peers [--store sqlite|postgres|both]
//! ```
//!
//! `--peers` runs only the side-by-side comparison with a Temporal dev server
//! (`peers.rs`) and rewrites only its own block of BENCHMARKS.md.

mod client;
mod history;
mod peers;
mod report;
mod scenarios;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use scenarios::{ChainWorker, Ctx, Outcome};
use server::{Setup, Store};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks a real ork server and writes BENCHMARKS.md")]
struct Args {
    /// Which state stores to measure: sqlite, postgres or both. PostgreSQL
    /// needs --postgres-url (scripts/bench.sh starts a private cluster).
    #[arg(long, default_value = "both")]
    store: String,
    /// Smaller runs: 100 one-task runs instead of 1,000, 2 s of heartbeats
    /// instead of 5, 30 s sustained instead of 60.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, from a (one task), b (chains), c (fan-outs, which
    /// also measures d, CPU), e (memory), f (worker calls), g (sustained),
    /// h (what authentication costs a small call), i (a 100,000-item
    /// `for_each`: memory while pending, then completion), j (run history
    /// at 1,000,000 seeded runs); i and j are not in the default set: they
    /// take minutes.
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,e,f,h")]
    scenarios: Vec<String>,
    /// Runs seeded for j.
    #[arg(long, default_value_t = 1_000_000)]
    history_runs: u64,
    /// Adds g: 60 s of back-to-back chains and fan-outs, in 10 s windows.
    #[arg(long)]
    sustained: bool,
    /// An administrative PostgreSQL URL; each scenario gets its own database.
    #[arg(long, env = "ORK_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Folder holding `ork` and `ork-worker` (default: next to this binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Python with the ork SDK installed, for the Python chain.
    #[arg(long)]
    python: Option<PathBuf>,
    /// Runs only the comparison with a Temporal dev server (chain of 40 and
    /// 1,000 tasks at once, Python workers) and writes only its block.
    #[arg(long)]
    peers: bool,
    /// A virtualenv holding `temporalio` and the `temporal` CLI
    /// (`scripts/bench.sh --peers` installs them there).
    #[arg(long)]
    peer_venv: Option<PathBuf>,
    /// Where to write the table (between its markers); `-` writes nowhere.
    #[arg(long)]
    output: Option<PathBuf>,
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = workspace_root();
    let bin_dir = match args.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("binary folder")?
            .to_path_buf(),
    };
    for bin in ["ork", "ork-worker"] {
        anyhow::ensure!(
            bin_dir.join(bin).is_file(),
            "{} is missing: build with `cargo build --release -p ork-cli -p ork-worker` (scripts/bench.sh does)",
            bin_dir.join(bin).display()
        );
    }
    let mut stores = Vec::new();
    if matches!(args.store.as_str(), "sqlite" | "both") {
        stores.push(Store::Sqlite);
    }
    if matches!(args.store.as_str(), "postgres" | "both") {
        if args.postgres_url.is_some() {
            stores.push(Store::Postgres);
        } else if args.store == "postgres" {
            anyhow::bail!(
                "--store postgres needs --postgres-url or ORK_TEST_POSTGRES_URL (scripts/bench.sh sets it)"
            );
        } else {
            eprintln!("bench: no PostgreSQL url; PostgreSQL is not run");
        }
    }
    anyhow::ensure!(
        !stores.is_empty() || args.store == "both",
        "--store must be sqlite, postgres or both"
    );
    let mut wanted: Vec<String> = args
        .scenarios
        .iter()
        .map(|s| s.trim().to_lowercase())
        .collect();
    if wanted.iter().any(|s| s == "d") && !wanted.iter().any(|s| s == "c") {
        wanted.push("c".to_owned());
    }
    if args.sustained {
        wanted.push("g".to_owned());
    }
    let sustained = if args.quick {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(60)
    };
    let python = args
        .python
        .unwrap_or_else(|| root.join(".tools/venv-py/bin/python"));
    let setup = Setup {
        bin_dir,
        postgres_url: args.postgres_url,
    };

    let output = args.output.unwrap_or_else(|| root.join("BENCHMARKS.md"));
    if args.peers {
        let venv = args
            .peer_venv
            .unwrap_or_else(|| root.join(".tools/venv-peers"));
        let tools = peers::PeerTools::in_venv(&venv, &root.join("bench"));
        eprintln!("bench: peers ...");
        let results = peers::compare(&setup, &stores, &python, &tools).await?;
        let block = peers::render(&results, &stores, &report::Meta::collect(&root, args.quick));
        println!("{block}");
        if output.as_os_str() != "-" {
            report::write_block(&output, peers::BEGIN, peers::END, &block)?;
            eprintln!("bench: wrote {}", output.display());
        }
        return Ok(());
    }

    let mut results: Vec<(Store, Outcome)> = Vec::new();
    let mut history = Vec::new();
    for store in stores {
        let ctx = Ctx {
            setup: setup.clone(),
            store,
            quick: args.quick,
            python: python.clone(),
            sustained,
        };
        let mut out = Outcome::default();
        let has = |s: &str| wanted.iter().any(|w| w == s);
        if has("a") {
            step(
                store,
                "a: one-task runs",
                scenarios::one_task(&ctx, &mut out),
            )
            .await?;
        }
        if has("b") {
            for kind in [
                ChainWorker::Rust,
                ChainWorker::Python,
                ChainWorker::Subprocess,
            ] {
                step(
                    store,
                    "b: chain of 40",
                    scenarios::chain(&ctx, kind, &mut out),
                )
                .await?;
            }
        }
        if has("c") {
            step(store, "c/d: fan-outs", scenarios::fan_out(&ctx, &mut out)).await?;
        }
        if has("e") {
            step(
                store,
                "e: pending memory",
                scenarios::pending_memory(&ctx, &mut out),
            )
            .await?;
        }
        if has("i") {
            step(
                store,
                "i: 100,000-item for_each",
                scenarios::big_for_each(&ctx, &mut out),
            )
            .await?;
        }
        if has("f") {
            step(
                store,
                "f: worker calls",
                scenarios::worker_calls(&ctx, &mut out),
            )
            .await?;
        }
        if has("g") {
            step(store, "g: sustained", scenarios::sustained(&ctx, &mut out)).await?;
        }
        if has("h") {
            step(
                store,
                "h: authentication cost",
                scenarios::auth_overhead(&ctx, &mut out),
            )
            .await?;
        }
        if has("j") {
            eprintln!("bench: {} j: run history ...", store.label());
            let t0 = std::time::Instant::now();
            let r = history::run_history(&ctx, args.history_runs)
                .await
                .with_context(|| format!("{} j: run history", store.label()))?;
            eprintln!(
                "bench: {} j: run history done in {:.1} s",
                store.label(),
                t0.elapsed().as_secs_f64()
            );
            history.push((store, r));
        }
        results.push((store, out));
    }

    // The main table only when a scenario of it ran, so `--scenarios j`
    // leaves it as it was.
    if wanted.iter().any(|s| s != "j") {
        let table = report::render(&results, &report::Meta::collect(&root, args.quick));
        println!("{table}");
        if output.as_os_str() != "-" {
            report::write(&output, &table)?;
            eprintln!("bench: wrote {}", output.display());
        }
    }
    if !history.is_empty() {
        let commit = report::Meta::collect(&root, args.quick).commit;
        let block = history::render(&history, &commit);
        println!("{block}");
        if output.as_os_str() != "-" {
            history::write(&output, &block)?;
            eprintln!("bench: wrote {}", output.display());
        }
    }
    Ok(())
}

async fn step(
    store: Store,
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    eprintln!("bench: {} {what} ...", store.label());
    let t0 = std::time::Instant::now();
    work.await
        .with_context(|| format!("{} {what}", store.label()))?;
    eprintln!(
        "bench: {} {what} done in {:.1} s",
        store.label(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
