//! The README test: runs the command blocks of README.md ("Using it",
//! "APIs" and "Security") and of the SDK READMEs ("Try it") as written, as a
//! new user would, and checks that every run they start succeeds.
//! ("Containers" needs a Docker engine or a cluster: `tests/docker.rs` runs
//! its YAML as written on the engine of `scripts/docker.sh`.)
//!
//! The blocks are read from the READMEs themselves, so the test and the
//! documentation cannot drift apart. As for a user: a fresh directory as the
//! working directory (holding what a checkout has: `examples/` and `sdks/`),
//! the default data dir (`.ork`) and the default port (7400), a fresh
//! virtualenv for the Python SDK. The one line not run is `cargo build
//! --release`: the binaries this test suite was built with are put first on
//! PATH instead (so the README's `export PATH=...` line is run but finds
//! nothing new). The first block of "Using it" is the server a user leaves
//! running in a terminal: it runs in the background for the whole test; the
//! other blocks run one after the other in one shell, like a second
//! terminal, so a variable one block sets (`$RUN`) is there for the next.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The port the README's commands use, as they use it: the default.
const PORT: u16 = 7400;
/// How long the blocks may take in all (a fresh virtualenv downloads its
/// packages, `go run` compiles the worker).
const BLOCKS_DEADLINE: Duration = Duration::from_secs(900);
const WAIT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// The ```sh blocks under the `## {section}` heading of a Markdown file.
fn sh_blocks(markdown: &str, section: &str) -> Vec<String> {
    let heading = format!("## {section}");
    let mut blocks = Vec::new();
    let mut inside_section = false;
    let mut block: Option<String> = None;
    for line in markdown.lines() {
        if let Some(text) = block.as_mut() {
            if line.trim_start().starts_with("```") {
                blocks.push(block.take().unwrap_or_default());
            } else {
                text.push_str(line);
                text.push('\n');
            }
            continue;
        }
        if line.starts_with("## ") {
            inside_section = line.trim_end() == heading;
            continue;
        }
        if inside_section && line.trim() == "```sh" {
            block = Some(String::new());
        }
    }
    assert!(
        !blocks.is_empty(),
        "no ```sh block under `{heading}`: did the README change its headings? Update this test with it"
    );
    blocks
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Copies what a checkout holds into the user's directory (no build output,
/// virtualenvs or data dirs of earlier tries).
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(src).expect("read dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        let skip = [
            ".venv",
            "__pycache__",
            ".ork",
            ".pytest_cache",
            ".mypy_cache",
        ];
        if skip.iter().any(|s| name == *s) || name.to_string_lossy().ends_with(".egg-info") {
            continue;
        }
        let to = dst.join(&name);
        let kind = entry.file_type().expect("type");
        if kind.is_dir() {
            copy_dir(&entry.path(), &to);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &to).expect("copy");
        }
    }
}

/// `bash` running a script in its own process group, killed with the whole
/// group (servers and workers the script left in the background) on drop.
struct Shell {
    child: Child,
    log: PathBuf,
}

impl Shell {
    fn start(home: &Path, env_path: &str, script: &str, log: PathBuf) -> Self {
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut command = Command::new("bash");
        command
            .args(["-euo", "pipefail", "-x", "-c", script])
            .current_dir(home)
            .env("PATH", env_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // A fresh user has none of the variables tests and CI set for ork.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("ORK_") {
                command.env_remove(&name);
            }
        }
        let child = command.spawn().expect("spawn bash");
        Self { child, log }
    }

    fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// Waits for the script to end, at most until `deadline`.
    fn wait(&mut self, deadline: Instant) -> Option<std::process::ExitStatus> {
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        for signal in ["-TERM", "-KILL"] {
            let _ = Command::new("kill")
                .args([signal, "--", &group])
                .stderr(Stdio::null())
                .status();
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = self.child.wait();
    }
}

/// Whether a program is on `path`.
fn on_path(program: &str, path: &str) -> bool {
    std::env::split_paths(path).any(|dir| dir.join(program).is_file())
}

/// A tool the blocks use that this machine may lack: CI must have it, a
/// developer's machine skips its lines, loudly.
fn require_or_skip(program: &str, path: &str) -> bool {
    if on_path(program, path) {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |ci| ci != "true"),
        "`{program}` is not installed but CI=true: the README test must run every block in CI"
    );
    eprintln!(
        "\n*** README test: `{program}` is not installed; SKIPPING the lines that use it ***\n"
    );
    false
}

async fn get_json(client: &reqwest::Client, path: &str) -> Option<Value> {
    let response = client
        .get(format!("http://127.0.0.1:{PORT}{path}"))
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.json().await.ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_commands_work_as_written() {
    // The README's server listens on the default port; if something else
    // does, say so rather than talk to it or wait for a bind that fails.
    if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", PORT)) {
        panic!(
            "port {PORT} is busy ({e}): the README test runs `ork dev` on the default port as \
             the README does. Stop what listens there (`ss -ltnp 'sport = :{PORT}'` shows it) \
             and run the test again"
        );
    }
    let root = repo_root();
    let readme = read(&root.join("README.md"));
    let python_readme = read(&root.join("sdks/python/README.md"));
    let go_readme = read(&root.join("sdks/go/README.md"));

    let home = tempfile::tempdir().expect("a fresh directory");
    let logs = tempfile::tempdir().expect("logs");
    copy_dir(&root.join("examples"), &home.path().join("examples"));
    copy_dir(&root.join("sdks/python"), &home.path().join("sdks/python"));
    copy_dir(&root.join("sdks/go"), &home.path().join("sdks/go"));

    let mut path = std::env::join_paths(
        [ork_tests::bin_dir(), root.join(".tools/bin")]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .expect("PATH")
    .to_string_lossy()
    .into_owned();
    if path.is_empty() {
        path = "/usr/bin:/bin".to_owned();
    }

    let mut using = sh_blocks(&readme, "Using it").into_iter();
    let server_block = using.next().expect("the server block");
    assert!(
        server_block.contains("ork dev"),
        "the first block of `Using it` starts the server:\n{server_block}"
    );
    let server_script: String = server_block
        .lines()
        .filter(|l| !l.trim_start().starts_with("cargo build"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut client_script = String::new();
    let grpcurl = require_or_skip("grpcurl", &path);
    let go = require_or_skip("go", &path);
    let blocks = using
        .chain(sh_blocks(&readme, "APIs"))
        .chain(sh_blocks(&python_readme, "Try it"))
        .chain(
            go.then(|| sh_blocks(&go_readme, "Try it"))
                .into_iter()
                .flatten(),
        );
    for block in blocks {
        for line in block.lines() {
            if !grpcurl && line.trim_start().starts_with("grpcurl") {
                continue;
            }
            client_script.push_str(line);
            client_script.push('\n');
        }
    }

    let mut server = Shell::start(
        home.path(),
        &path,
        &server_script,
        logs.path().join("server.log"),
    );
    // A user starts typing in the second terminal once the server says it
    // deployed the example.
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let deadline = Instant::now() + WAIT;
    loop {
        if get_json(&http, "/workflows/etl").await.is_some() {
            break;
        }
        if let Some(status) = server.exited() {
            panic!(
                "the README's server block ended ({status}) before it served:\n{}",
                server.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the README's server block did not serve the example in {WAIT:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut client = Shell::start(
        home.path(),
        &path,
        &client_script,
        logs.path().join("client.log"),
    );
    let status = tokio::task::block_in_place(|| client.wait(Instant::now() + BLOCKS_DEADLINE));
    match status {
        Some(status) if status.success() => {}
        Some(status) => panic!(
            "a README command failed ({status}); the trace (`+` lines are the commands):\n{}\n\nserver:\n{}",
            client.log(),
            server.log()
        ),
        None => panic!(
            "the README commands did not finish in {BLOCKS_DEADLINE:?}:\n{}\n\nserver:\n{}",
            client.log(),
            server.log()
        ),
    }

    // The Security section's block starts its own `ork server` (TLS, tokens)
    // on another port, and exports variables the blocks above must not see:
    // it runs in a shell of its own, as a user would in a fresh terminal.
    let security_blocks = sh_blocks(&readme, "Security");
    assert!(
        security_blocks.iter().any(|b| b.contains("ork server")),
        "the Security section shows how to start a server with TLS and tokens"
    );
    for (i, block) in security_blocks.iter().enumerate() {
        let mut shell = Shell::start(
            home.path(),
            &path,
            block,
            logs.path().join(format!("security-{i}.log")),
        );
        let status = tokio::task::block_in_place(|| shell.wait(Instant::now() + WAIT * 3));
        assert!(
            status.is_some_and(|s| s.success()),
            "the README's Security block failed ({status:?}); the trace:\n{}",
            shell.log()
        );
    }

    // Every run the blocks started ended well: all succeeded but the one
    // the README cancels on purpose (runs started without --wait, like the
    // REST one, are waited for here).
    let deadline = Instant::now() + WAIT;
    let runs = loop {
        let runs = get_json(&http, "/runs?limit=1000")
            .await
            .and_then(|v| v["runs"].as_array().cloned())
            .unwrap_or_default();
        let unfinished = runs
            .iter()
            .any(|r| matches!(r["status"].as_str(), Some("pending" | "running")));
        if !unfinished || Instant::now() > deadline {
            break runs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let summary: Vec<String> = runs
        .iter()
        .map(|r| format!("{} {} {}", r["workflow"], r["status"], r["id"]))
        .collect();
    let count = |workflow: &str| runs.iter().filter(|r| r["workflow"] == workflow).count();
    assert!(count("etl") >= 4, "{summary:#?}");
    assert!(count("wordcount") >= 2, "{summary:#?}");
    if go {
        assert!(count("sum") >= 2, "{summary:#?}");
    }
    let cancelled = runs.iter().filter(|r| r["status"] == "cancelled").count();
    assert_eq!(
        cancelled, 1,
        "only the README's `ork run cancel`: {summary:#?}"
    );
    for run in &runs {
        assert!(
            matches!(run["status"].as_str(), Some("success" | "cancelled")),
            "a run the README started did not succeed: {run:#}\n{summary:#?}\n{}",
            client.log()
        );
    }
    assert!(
        home.path().join(".ork/ork.db").is_file(),
        "`ork dev` keeps its data in the default .ork/ of where it started"
    );
    assert!(home.path().join("workflow.schema.json").is_file());
    drop(client);
    drop(server);
}
