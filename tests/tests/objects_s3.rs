//! End to end: a server mirroring into S3 (moto, started by
//! `scripts/emulators.sh`), stopped, then the run read back from the bucket
//! alone, by the library and by `ork run status --from-objects`.

use ork_server::objects::Settings;
use ork_tests::{TestServer, mirror, test_options};

/// `s3://BUCKET/e2e/UNIQUE?...` for moto, or `None` (skipped loudly, failed in CI).
fn s3_url() -> Option<String> {
    let endpoint = mirror::emulator("ORK_TEST_S3_ENDPOINT")?;
    let bucket = std::env::var("ORK_TEST_S3_BUCKET").unwrap_or_else(|_| "ork-test".into());
    // Everything in the URL: the server must not depend on this process's
    // environment, and moto accepts any credentials.
    Some(format!(
        "s3://{bucket}/e2e/{}?endpoint={endpoint}&allow_http=true&region=us-east-1\
         &access_key_id=testing&secret_access_key=testing",
        mirror::unique()
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_mirrored_to_s3_reads_back_without_the_server() {
    let Some(url) = s3_url() else { return };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut options = test_options(data_dir.path());
    options.objects_url = url.clone();
    let server = TestServer::start_with(data_dir, options).await;
    let from_server = mirror::run_to_success(&mut server.clients().await).await;
    // Stopping flushes the outbox into the bucket.
    let _data = server.stop().await;
    mirror::assert_bucket_holds(&url, &Settings::new(), &[], &from_server).await;
}
