//! Secrets: resolved at dispatch for the worker, and masked wherever text a
//! task produced is stored (logs, errors, outputs). A secret value is never
//! written to the database, the mirror or a response.
//!
//! `{from_env: VAR}` reads the server's own environment, which holds the
//! server's credentials (`ORK_STATE_URL` with its database password, cloud
//! keys). So it reads only variables the operator allowed (`--allow-env`,
//! none by default), and their values are masked like secrets.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ork_domain::EnvValue;
use serde_json::Value;

use crate::state::StateStore;

/// What replaces a secret value in stored text.
pub const MASK: &str = "********";
/// Values shorter than this are not masked: masking "a" would garble every
/// log line without protecting anything.
const MIN_MASKED_LEN: usize = 4;

/// Which server variables `{from_env: VAR}` may read: exact names, or
/// patterns where `*` stands for any run of characters (`APP_*`).
#[derive(Debug, Clone, Default)]
pub struct EnvAllowList {
    patterns: Vec<String>,
}

impl EnvAllowList {
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Self {
            patterns: patterns.into_iter().collect(),
        }
    }

    pub fn allows(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| glob(p, name))
    }

    /// Why `{from_env: var}` in field `env.key` of `task` is refused, if it is.
    pub fn refusal(&self, task: &str, key: &str, var: &str) -> Option<String> {
        (!self.allows(var)).then(|| {
            format!(
                "task `{task}`, field `env.{key}`: `from_env: {var}` reads a server variable this server does not allow; start the server with `--allow-env {var}` (or a pattern such as `{prefix}*`) to allow it",
                prefix = var.split('_').next().unwrap_or(var)
            )
        })
    }

    /// Every refused `from_env` of a workflow, in task order.
    pub fn refusals(&self, def: &ork_domain::WorkflowDefinition) -> Vec<String> {
        def.tasks
            .iter()
            .flat_map(|task| {
                task.env.iter().filter_map(move |(key, value)| match value {
                    EnvValue::FromEnv(var) => self.refusal(&task.name, key, var),
                    _ => None,
                })
            })
            .collect()
    }
}

/// `*` matches any run of characters (none included); all else literally.
fn glob(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole name must have matched.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Where secret and host values come from, configured at start-up.
pub struct Secrets {
    /// The server's environment as captured at start-up: `ORK_SECRET_<NAME>`
    /// for secrets, any variable for `from_env`.
    env: HashMap<String, String>,
    /// A folder with one file per secret, named like the secret (e.g. a
    /// mounted Kubernetes secret); checked before the environment.
    dir: Option<PathBuf>,
    /// The variables `from_env` may read.
    allow_env: EnvAllowList,
    state: Arc<dyn StateStore>,
    /// Secret values per task run, for masking its reports.
    masks: Mutex<HashMap<String, Arc<Vec<String>>>>,
}

impl Secrets {
    pub fn new(
        env: HashMap<String, String>,
        dir: Option<PathBuf>,
        allow_env: EnvAllowList,
        state: Arc<dyn StateStore>,
    ) -> Self {
        Self {
            env,
            dir,
            allow_env,
            state,
            masks: Mutex::new(HashMap::new()),
        }
    }

    /// The variables `from_env` may read.
    pub fn allow_env(&self) -> &EnvAllowList {
        &self.allow_env
    }

    /// An allowed server variable's value.
    fn host_var(&self, var: &str) -> Option<String> {
        self.allow_env
            .allows(var)
            .then(|| self.env.get(var).cloned())
            .flatten()
    }

    /// A secret's value: the file of that name in the secrets folder, else
    /// `ORK_SECRET_<NAME>`.
    pub(crate) fn secret(&self, name: &str) -> Option<String> {
        // Deploy refuses such names; a definition stored before that check
        // must still never read a file outside the secrets folder.
        if ork_domain::events::check_secret_name(name).is_err() {
            return None;
        }
        if let Some(dir) = &self.dir
            && let Ok(text) = std::fs::read_to_string(dir.join(name))
        {
            return Some(text.trim_end_matches(['\n', '\r']).to_owned());
        }
        self.env.get(&format!("ORK_SECRET_{name}")).cloned()
    }

    /// Resolves a task's env; the error names the task, the field and the fix.
    pub fn resolve_env(
        &self,
        task: &str,
        env: &BTreeMap<String, EnvValue>,
    ) -> Result<HashMap<String, String>, String> {
        let mut out = HashMap::with_capacity(env.len());
        for (key, value) in env {
            let resolved = match value {
                EnvValue::Literal(s) => s.clone(),
                EnvValue::Secret(name) => self.secret(name).ok_or_else(|| {
                    let dir = self
                        .dir
                        .as_ref()
                        .map(|d| format!(" or a file {}", d.join(name).display()))
                        .unwrap_or_default();
                    format!(
                        "task `{task}`, field `env.{key}`: secret `{name}` is not set on the server; set ORK_SECRET_{name} in the server's environment{dir}"
                    )
                })?,
                EnvValue::FromEnv(var) => {
                    // Checked again here, not only at deploy: the allow-list
                    // may have shrunk since.
                    if let Some(refusal) = self.allow_env.refusal(task, key, var) {
                        return Err(refusal);
                    }
                    self.host_var(var).ok_or_else(|| {
                        format!("task `{task}`, field `env.{key}`: variable `{var}` is not set in the server's environment")
                    })?
                }
            };
            out.insert(key.clone(), resolved);
        }
        Ok(out)
    }

    /// The secret values a task run can see, looked up once and cached.
    pub async fn values_for(&self, task_run_id: &str) -> Arc<Vec<String>> {
        if let Some(found) = self
            .masks
            .lock()
            .ok()
            .and_then(|m| m.get(task_run_id).cloned())
        {
            return found;
        }
        let values = Arc::new(self.lookup(task_run_id).await.unwrap_or_default());
        if let Ok(mut masks) = self.masks.lock() {
            masks.insert(task_run_id.to_owned(), values.clone());
        }
        values
    }

    /// Caches the secret values of a task run whose spec was just built, so
    /// its reports are masked without reading the store.
    pub fn remember(&self, task_run_id: &str, env: &BTreeMap<String, EnvValue>) {
        let values = Arc::new(self.masked_values(env));
        if let Ok(mut masks) = self.masks.lock() {
            masks.insert(task_run_id.to_owned(), values);
        }
    }

    async fn lookup(&self, task_run_id: &str) -> Option<Vec<String>> {
        let task = self.state.get_task_run(task_run_id).await.ok()??;
        let run = self.state.get_run(&task.run_id).await.ok()??;
        let version = self.state.get_version(&run.workflow_version).await.ok()??;
        let def = version.task(&task.task_name)?;
        Some(self.masked_values(&def.env))
    }

    /// The values of a task's secrets worth masking, longest first.
    fn masked_values(&self, env: &BTreeMap<String, EnvValue>) -> Vec<String> {
        let mut values: Vec<String> = env
            .values()
            .filter_map(|v| match v {
                EnvValue::Secret(name) => self.secret(name),
                EnvValue::FromEnv(var) => self.host_var(var),
                EnvValue::Literal(_) => None,
            })
            .filter(|v| v.len() >= MIN_MASKED_LEN)
            .collect();
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values
    }

    /// Drops the cache entry of a finished task run.
    pub fn forget(&self, task_run_id: &str) {
        if let Ok(mut masks) = self.masks.lock() {
            masks.remove(task_run_id);
        }
    }
}

/// Replaces every secret value in `text`.
pub fn mask(text: &str, values: &[String]) -> String {
    let mut out = text.to_owned();
    for v in values {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), MASK);
        }
    }
    out
}

/// Replaces secret values inside every string of a JSON value.
pub fn mask_json(value: Value, values: &[String]) -> Value {
    if values.is_empty() {
        return value;
    }
    match value {
        Value::String(s) => Value::String(mask(&s, values)),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| mask_json(v, values)).collect())
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (mask(&k, values), mask_json(v, values)))
                .collect(),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allow_list_patterns() {
        let allow =
            EnvAllowList::new(["HOME".to_owned(), "APP_*".to_owned(), "*_PUBLIC".to_owned()]);
        assert!(allow.allows("HOME"));
        assert!(!allow.allows("HOMER"));
        assert!(allow.allows("APP_"));
        assert!(allow.allows("APP_MODE"));
        assert!(!allow.allows("MY_APP_MODE"));
        assert!(allow.allows("KEY_PUBLIC"));
        assert!(!allow.allows("ORK_STATE_URL"));
        assert!(!EnvAllowList::default().allows("HOME"), "none by default");
        assert!(glob("A*B*C", "AxxBxxC"));
        assert!(!glob("A*B*C", "AxxC"));
        assert!(glob("*", ""));
        assert!(!glob("AB*B", "AB"), "the tail may not overlap the head");
        let refusal = EnvAllowList::default()
            .refusal("load", "DB", "ORK_STATE_URL")
            .expect("refused");
        assert_eq!(
            refusal,
            "task `load`, field `env.DB`: `from_env: ORK_STATE_URL` reads a server variable this server does not allow; start the server with `--allow-env ORK_STATE_URL` (or a pattern such as `ORK*`) to allow it"
        );
    }

    #[test]
    fn masks_every_occurrence_longest_first() {
        let values = vec!["hunter22".to_owned(), "hunter".to_owned()];
        assert_eq!(
            mask("pw=hunter22 and hunter", &values),
            "pw=******** and ********"
        );
    }

    #[test]
    fn masks_inside_json_strings_and_keys() {
        let values = vec!["s3cr3t".to_owned()];
        let masked = mask_json(json!({"a": ["x s3cr3t"], "s3cr3t": 1, "n": 5}), &values);
        assert_eq!(masked, json!({"a": ["x ********"], "********": 1, "n": 5}));
    }
}
