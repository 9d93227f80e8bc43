//! A fresh PostgreSQL database on the server `scripts/postgres.sh` started,
//! for tests that run a real server on PostgreSQL as well as SQLite.

use std::process::Command;

/// A database of its own, dropped (with its connections) at the end.
pub struct Database {
    admin: String,
    name: String,
    /// The URL to give the server.
    pub url: String,
}

impl Database {
    /// `None`, with a loud note, when `ORK_TEST_POSTGRES_URL` is unset
    /// (a failure in CI, where it must be set). `what` names the database.
    pub fn create(what: &str) -> Option<Self> {
        let admin = match std::env::var("ORK_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "ORK_TEST_POSTGRES_URL is not set in CI: run the tests under scripts/postgres.sh"
                );
                eprintln!(
                    "\n*** SKIPPING the PostgreSQL case of `{what}`: ORK_TEST_POSTGRES_URL is not set (use scripts/postgres.sh) ***\n"
                );
                return None;
            }
        };
        let name = format!("ork_{what}_{}", std::process::id());
        psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Self { admin, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        psql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

fn psql(admin: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(admin)
        .arg("-qc")
        .arg(sql)
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
