//! End to end: a server mirroring into a local folder (`file://`), stopped,
//! then the run read back from the folder alone, by the library and by
//! `ork run status --from-objects`. No emulator needed, so it always runs.

use ork_server::objects::Settings;
use ork_tests::{TestServer, mirror, test_options};

#[tokio::test(flavor = "multi_thread")]
async fn a_run_mirrored_to_a_folder_reads_back_without_the_server() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let bucket = tempfile::tempdir().expect("bucket dir");
    let url = format!("file://{}", bucket.path().display());
    let mut options = test_options(data_dir.path());
    options.objects_url = url.clone();
    let server = TestServer::start_with(data_dir, options).await;
    let from_server = mirror::run_to_success(&mut server.clients().await).await;
    // Stopping flushes the outbox into the bucket.
    let _data = server.stop().await;
    mirror::assert_bucket_holds(&url, &Settings::new(), &[], &from_server).await;

    // Attempts are written a run's batch at a time (segments), not as files
    // per attempt: with logs this small, nothing lives under `tasks/`.
    let run = bucket.path().join("runs").join(&from_server.id);
    let segments = std::fs::read_dir(run.join("attempts"))
        .expect("segments")
        .count();
    assert!(segments >= 1, "at least one segment");
    assert!(
        segments <= 4 * 3,
        "{segments} segments for 4 attempts of 3 task runs: written per batch"
    );
    assert!(
        !run.join("tasks").exists(),
        "no per-attempt files for small logs"
    );
}
