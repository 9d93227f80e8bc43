//! End to end: `ork server --objects gs://…` as a real process with nothing
//! in its environment but `PATH` and `STORAGE_EMULATOR_HOST` (fake-gcs-server,
//! started by `scripts/emulators.sh`) mirrors a run, stops on SIGTERM, and the
//! run is read back from the bucket alone, by the library and by
//! `ork run status --from-objects` (again with only that variable set). The
//! prefix holds a `+`, a space and accented letters, which must reach the
//! bucket as written.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path;
use ork_server::objects::{self, Settings};
use ork_tests::{Clients, binary, free_port, mirror};

#[tokio::test(flavor = "multi_thread")]
async fn a_run_mirrored_to_gcs_reads_back_with_only_the_emulator_variable() {
    let Some(endpoint) = mirror::emulator("ORK_TEST_GCS_ENDPOINT") else {
        return;
    };
    let bucket = std::env::var("ORK_TEST_GCS_BUCKET").unwrap_or_else(|_| "ork-test".into());
    let unique = mirror::unique();
    let url = format!("gs://{bucket}/e2e/{unique}/a+b c/%C3%A9t%C3%A9");
    let data_dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(data_dir.path().join("server.log")).expect("log file");
    // `ork server` requires tokens; its first admin token comes from a file.
    let token = ork_server::auth::credentials::generate().expect("random token");
    let token_file = data_dir.path().join("admin.token");
    std::fs::write(&token_file, &token).expect("token file");
    let mut server = Command::new(binary("ork"))
        .arg("server")
        .args(["--listen", &listen, "--objects", &url])
        .arg("--bootstrap-token-file")
        .arg(&token_file)
        .arg("--state")
        .arg(format!(
            "sqlite://{}",
            data_dir.path().join("ork.db").display()
        ))
        .arg("--data-dir")
        .arg(data_dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("STORAGE_EMULATOR_HOST", &endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn ork server");
    let server_log =
        || std::fs::read_to_string(data_dir.path().join("server.log")).unwrap_or_default();

    let mut clients = Clients::connect_with(
        &format!("http://{listen}"),
        &ork_worker::ConnectOptions::default().with_token(&token),
    )
    .await;
    let from_server = mirror::run_to_success(&mut clients).await;
    drop(clients);
    // SIGTERM: the server drains its outbox into the bucket, then exits.
    let term = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = server.kill();
            panic!(
                "ork server did not stop after SIGTERM; its log:\n{}",
                server_log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        status.success(),
        "ork server exited with {status}; its log:\n{}",
        server_log()
    );

    let emulator = [("STORAGE_EMULATOR_HOST", endpoint.as_str())];
    let settings: Settings = emulator
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    mirror::assert_bucket_holds(&url, &settings, &emulator, &from_server).await;

    // The objects sit under the prefix as written, decoded once.
    let root = objects::open(&format!("gs://{bucket}"), &settings).expect("bucket root");
    let names: Vec<String> = root
        .list(Some(&Path::from(format!("e2e/{unique}"))))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list the bucket");
    let run_doc = format!("e2e/{unique}/a+b c/été/runs/{}/run.json", from_server.id);
    assert!(names.contains(&run_doc), "{run_doc} not in {names:#?}");
    assert!(
        names
            .iter()
            .all(|n| n.starts_with(&format!("e2e/{unique}/a+b c/été/"))),
        "{names:#?}"
    );
}
