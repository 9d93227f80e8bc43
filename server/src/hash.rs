//! Content hashes for workflow versions and task files.

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The version id of a workflow: a hash over its YAML and every task file, so
/// the same content always gets the same version and any change a new one.
pub fn workflow_version(yaml: &str, files: &std::collections::BTreeMap<String, Vec<u8>>) -> String {
    workflow_version_in(yaml, None, files)
}

/// [`workflow_version`] of a workflow whose relative program paths were
/// resolved against `base_dir`: the same YAML deployed from two folders runs
/// different programs, so it is two versions. `None` hashes as
/// [`workflow_version`] does.
pub fn workflow_version_in(
    yaml: &str,
    base_dir: Option<&str>,
    files: &std::collections::BTreeMap<String, Vec<u8>>,
) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"ork-workflow-v1\0");
    hasher.update((yaml.len() as u64).to_le_bytes());
    hasher.update(yaml.as_bytes());
    if let Some(dir) = base_dir {
        hasher.update(b"\0base_dir\0");
        hasher.update((dir.len() as u64).to_le_bytes());
        hasher.update(dir.as_bytes());
    }
    for (path, content) in files {
        hasher.update((path.len() as u64).to_le_bytes());
        hasher.update(path.as_bytes());
        hasher.update((content.len() as u64).to_le_bytes());
        hasher.update(content);
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn version_changes_with_any_file_and_is_stable() {
        let mut files = BTreeMap::new();
        files.insert("a.sh".to_owned(), b"echo a".to_vec());
        let v1 = workflow_version("name: x", &files);
        assert_eq!(v1, workflow_version("name: x", &files));
        assert_eq!(v1.len(), 16);
        files.insert("a.sh".to_owned(), b"echo b".to_vec());
        assert_ne!(v1, workflow_version("name: x", &files));
        assert_eq!(
            workflow_version_in("name: x", None, &files),
            workflow_version("name: x", &files)
        );
        assert_ne!(
            workflow_version_in("name: x", Some("/a"), &files),
            workflow_version_in("name: x", Some("/b"), &files)
        );
    }

    #[test]
    fn sha256_of_empty_input_is_the_known_value() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
