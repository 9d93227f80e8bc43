//! Paths given on the command line, made absolute once, at start-up, against
//! the directory `ork` was started in.
//!
//! A server hands its data directory to every subprocess it starts, and
//! those run in directories of their own: a relative `.ork/work` would point
//! somewhere else there. So nothing below the command line ever sees a
//! relative path; the functions here are the only place that knows the
//! starting directory.

use std::path::{Path, PathBuf};

/// `path` joined to `cwd` when relative.
pub fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        // `./x` reads better as `x` in every message that shows it.
        let path = path.strip_prefix(".").unwrap_or(path);
        cwd.join(path)
    }
}

/// A program path: made absolute when it names a file by a path (`./x`,
/// `bin/x`), kept as it is when it is a bare name looked up on PATH.
pub fn absolute_program(path: &Path, cwd: &Path) -> PathBuf {
    if path.components().count() > 1 || path.starts_with(".") {
        absolute(path, cwd)
    } else {
        path.to_path_buf()
    }
}

/// A state store URL with a relative SQLite path (`sqlite://ork.db`,
/// `sqlite:data/ork.db`) rewritten to an absolute one; other URLs (in-memory
/// SQLite, PostgreSQL) as they are.
pub fn absolute_state_url(url: &str, cwd: &Path) -> String {
    if url.contains(":memory:") || url.contains("mode=memory") {
        return url.to_owned();
    }
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_owned();
    };
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    if path.is_empty() || path.starts_with('/') {
        return url.to_owned();
    }
    let absolute = absolute(Path::new(path), cwd);
    match query {
        Some(query) => format!("sqlite://{}?{query}", absolute.display()),
        None => format!("sqlite://{}", absolute.display()),
    }
}

/// An object store URL with a relative folder (`file://objects`) rewritten
/// to an absolute one (`file:///srv/objects`); other URLs as they are.
pub fn absolute_objects_url(url: &str, cwd: &Path) -> String {
    match url.strip_prefix("file://") {
        Some(path) if !path.is_empty() && !path.starts_with('/') => {
            format!("file://{}", absolute(Path::new(path), cwd).display())
        }
        _ => url.to_owned(),
    }
}

/// The directory `ork` was started in.
pub fn current_dir() -> anyhow::Result<PathBuf> {
    std::env::current_dir().map_err(|e| {
        anyhow::anyhow!(
            "cannot read the current directory ({e}); start ork from an existing directory"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CWD: &str = "/home/me/project";

    #[test]
    fn relative_paths_join_the_starting_directory() {
        let cwd = Path::new(CWD);
        assert_eq!(
            absolute(Path::new(".ork"), cwd),
            PathBuf::from("/home/me/project/.ork")
        );
        assert_eq!(
            absolute(Path::new("./data"), cwd),
            PathBuf::from("/home/me/project/data")
        );
        assert_eq!(
            absolute(Path::new("/var/ork"), cwd),
            PathBuf::from("/var/ork")
        );
        assert_eq!(
            absolute_program(Path::new("ork-worker"), cwd),
            PathBuf::from("ork-worker"),
            "a bare name is looked up on PATH"
        );
        assert_eq!(
            absolute_program(Path::new("target/debug/ork-worker"), cwd),
            PathBuf::from("/home/me/project/target/debug/ork-worker")
        );
    }

    #[test]
    fn state_urls_with_relative_sqlite_paths_become_absolute() {
        let cwd = Path::new(CWD);
        for (given, want) in [
            ("sqlite://ork.db", "sqlite:///home/me/project/ork.db"),
            (
                "sqlite:data/ork.db",
                "sqlite:///home/me/project/data/ork.db",
            ),
            (
                "sqlite://./ork.db?mode=rwc",
                "sqlite:///home/me/project/ork.db?mode=rwc",
            ),
            ("sqlite:///var/lib/ork.db", "sqlite:///var/lib/ork.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://ork@db/ork", "postgres://ork@db/ork"),
        ] {
            assert_eq!(absolute_state_url(given, cwd), want, "{given}");
        }
    }

    #[test]
    fn object_urls_with_relative_folders_become_absolute() {
        let cwd = Path::new(CWD);
        for (given, want) in [
            ("file://objects", "file:///home/me/project/objects"),
            ("file://./a/b", "file:///home/me/project/a/b"),
            ("file:///srv/objects", "file:///srv/objects"),
            ("memory://", "memory://"),
            ("s3://bucket/prefix", "s3://bucket/prefix"),
        ] {
            assert_eq!(absolute_objects_url(given, cwd), want, "{given}");
        }
    }
}
