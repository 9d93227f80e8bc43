//! `ork run start WORKFLOW [--input key=value]... [--input-file F]
//! [--label key=value]... [--request-id ID] [--wait]`.
//!
//! The server applies the workflow's declared input defaults and checks the
//! input against its `inputs:`, so a workflow whose inputs all have defaults
//! starts with no `--input` at all.

use std::io::Read as _;
use std::path::PathBuf;

use clap::Args;
use ork_proto::v1::StartRunRequest;
use serde_json::{Map, Value};

use crate::commands::Context;
use crate::error::usage;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct StartArgs {
    /// The workflow to run (`ork workflow list` shows them).
    workflow: String,
    /// Set an input field: `key=value`, `key.sub=value`. The value is JSON
    /// when it parses as JSON (`3`, `true`, `[1,2]`, `{"a":1}`), else a string.
    /// Fields the workflow declares with a default may be left out.
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    inputs: Vec<String>,
    /// A JSON object file (`-` for stdin) to start from; `--input` overrides its keys.
    #[arg(long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    /// Label the run (`key=value`) to find it by later with
    /// `ork run list --label key=value`; repeat for several.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Start at most once per id: repeating the command with the same id
    /// (say, after a timeout) within 24 hours prints the first run.
    #[arg(long, value_name = "ID")]
    request_id: Option<String>,
    /// Start it on this version of the workflow (a hash, or at least 6 of its
    /// first characters, from `ork workflow versions`) instead of the current one.
    #[arg(long, value_name = "VERSION", conflicts_with = "request_id")]
    version: Option<String>,
    /// Follow the run until it ends, showing its progress on stderr, then
    /// print it and exit 1 unless it succeeded.
    #[arg(long)]
    wait: bool,
}

pub async fn run(args: StartArgs, ctx: &Context) -> anyhow::Result<()> {
    let base = match &args.input_file {
        Some(path) => read_input_file(path)?,
        None => Map::new(),
    };
    let input = parse_input(base, &args.inputs).map_err(usage)?;
    let labels = args
        .labels
        .iter()
        .map(|pair| ork_domain::labels::parse_pair(pair))
        .collect::<Result<std::collections::HashMap<_, _>, _>>()
        .map_err(|e| usage(format!("--label: {e}")))?;
    let client = ctx.connect().await?;
    let run = client
        .runs
        .clone()
        .start_run(StartRunRequest {
            workflow: args.workflow,
            input: Some(ork_proto::json::to_proto(&Value::Object(input))),
            labels,
            request_id: args.request_id.unwrap_or_default(),
            version: args.version.unwrap_or_default(),
        })
        .await?
        .into_inner()
        .run
        .unwrap_or_default();
    if args.wait {
        return super::wait_and_report(&client, &run.id, ctx).await;
    }
    match ctx.output {
        OutputFormat::Json => output::print_json(&run)?,
        OutputFormat::Table => output::emit_line(&run.id)?,
    }
    Ok(())
}

fn read_input_file(path: &PathBuf) -> anyhow::Result<Map<String, Value>> {
    let text = if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| usage(format!("cannot read the input from stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read --input-file {}: {e}", path.display())))?
    };
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(usage(format!(
            "--input-file {} must hold a JSON object",
            path.display()
        ))),
        Err(e) => Err(usage(format!(
            "--input-file {} is not valid JSON: {e}",
            path.display()
        ))),
    }
}

/// Applies `key=value` pairs, in order, on top of `base`.
///
/// A value is taken as JSON when it parses (so `n=3` is a number and
/// `tags=["a"]` a list) and as a plain string otherwise (`date=2026-11-26`);
/// quote it as JSON to force a string: `n='"3"'`. Dots in the key reach into
/// nested objects, creating them as needed. A pair never silently undoes an
/// earlier one: setting `a` after `a.b` merges an object into `a` and
/// refuses anything else.
pub fn parse_input(
    base: Map<String, Value>,
    pairs: &[String],
) -> Result<Map<String, Value>, String> {
    let mut input = base;
    // The key paths set by the pairs so far, with the pair that set each.
    let mut set: Vec<(Vec<&str>, &str)> = Vec::new();
    for pair in pairs {
        let Some((key, raw)) = pair.split_once('=') else {
            return Err(format!("--input {pair:?} is not key=value"));
        };
        let path: Vec<&str> = key.split('.').collect();
        if path.iter().any(|part| part.is_empty()) {
            return Err(format!(
                "--input {pair:?} has an empty key; write key=value or key.sub=value"
            ));
        }
        let value: Value =
            serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
        let below = set
            .iter()
            .find(|(earlier, _)| earlier.len() > path.len() && earlier.starts_with(&path));
        let value = match (below, value) {
            (None, value) => value,
            (Some(_), Value::Object(fields)) => {
                // Merged into what the earlier pairs built, later keys winning.
                let mut merged = match get_path(&input, &path) {
                    Some(Value::Object(existing)) => existing.clone(),
                    _ => Map::new(),
                };
                merged.extend(fields);
                Value::Object(merged)
            }
            (Some((earlier, earlier_pair)), _) => {
                return Err(format!(
                    "--input {pair:?} would replace {:?}, set by --input {earlier_pair:?}; \
                     set the fields one by one (`{key}.FIELD=VALUE`) or give the whole value once",
                    earlier.join(".")
                ));
            }
        };
        set_path(&mut input, &path, value).map_err(|parent| {
            format!("--input {pair:?}: cannot set {key:?} because {parent:?} is not an object")
        })?;
        set.push((path, pair.as_str()));
    }
    Ok(input)
}

/// The value at `path`, if every step is an object that has it.
fn get_path<'a>(map: &'a Map<String, Value>, path: &[&str]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut current = map.get(*first)?;
    for part in rest {
        current = current.as_object()?.get(*part)?;
    }
    Some(current)
}

/// Sets `path` in `map`; on failure returns the prefix that is not an object.
fn set_path(map: &mut Map<String, Value>, path: &[&str], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut current = map;
    for (depth, part) in parents.iter().enumerate() {
        let entry = current
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        current = match entry {
            Value::Object(inner) => inner,
            _ => return Err(path[..=depth].join(".")),
        };
    }
    current.insert((*last).to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(base: Value, pairs: &[&str]) -> Result<Value, String> {
        let Value::Object(base) = base else {
            panic!("base must be an object")
        };
        let pairs: Vec<String> = pairs.iter().map(|p| (*p).to_owned()).collect();
        parse_input(base, &pairs).map(Value::Object)
    }

    #[test]
    fn values_are_json_when_they_parse_else_strings() {
        let input = parse(
            json!({}),
            &[
                "date=2026-11-26",
                "n=3",
                "f=1.5",
                "ok=true",
                "none=null",
                "tags=[\"a\",1]",
                "obj={\"a\":1}",
                "quoted=\"3\"",
                "empty=",
                "eq=a=b",
                "zero=007",
            ],
        );
        assert_eq!(
            input,
            Ok(
                json!({"date": "2026-11-26", "n": 3, "f": 1.5, "ok": true, "none": null,
                      "tags": ["a", 1], "obj": {"a": 1}, "quoted": "3", "empty": "",
                      "eq": "a=b", "zero": "007"})
            )
        );
    }

    #[test]
    fn dotted_keys_set_nested_fields_over_the_file() {
        let base = json!({"db": {"host": "localhost", "port": 5432}, "keep": 1});
        let input = parse(
            base,
            &["db.port=6543", "db.opts.ssl=true", "new.deep.key=x"],
        );
        assert_eq!(
            input,
            Ok(
                json!({"db": {"host": "localhost", "port": 6543, "opts": {"ssl": true}},
                      "keep": 1, "new": {"deep": {"key": "x"}}})
            )
        );
    }

    #[test]
    fn later_pairs_override_earlier_ones() {
        assert_eq!(parse(json!({"a": 1}), &["a=2", "a=3"]), Ok(json!({"a": 3})));
        assert_eq!(
            parse(json!({"a": {"b": 1}}), &["a=2"]),
            Ok(json!({"a": 2})),
            "a pair overrides the file's keys"
        );
    }

    #[test]
    fn a_pair_never_silently_drops_an_earlier_nested_one() {
        assert_eq!(
            parse(json!({}), &["a.b=1", "a=2"]),
            Err(
                "--input \"a=2\" would replace \"a.b\", set by --input \"a.b=1\"; set the fields \
                 one by one (`a.FIELD=VALUE`) or give the whole value once"
                    .to_owned()
            )
        );
        assert_eq!(
            parse(json!({}), &["a.b=1", "a={\"c\": 2}"]),
            Ok(json!({"a": {"b": 1, "c": 2}})),
            "an object merges"
        );
        assert_eq!(
            parse(json!({}), &["a.b.c=1", "a.b={\"c\": 3, \"d\": 4}"]),
            Ok(json!({"a": {"b": {"c": 3, "d": 4}}})),
            "later keys win in a merge"
        );
        assert_eq!(
            parse(json!({}), &["a={\"x\": 1}", "a.b=2"]),
            Ok(json!({"a": {"x": 1, "b": 2}}))
        );
    }

    #[test]
    fn bad_pairs_are_explained() {
        assert_eq!(
            parse(json!({}), &["novalue"]),
            Err("--input \"novalue\" is not key=value".to_owned())
        );
        assert_eq!(
            parse(json!({}), &["a..b=1"]),
            Err("--input \"a..b=1\" has an empty key; write key=value or key.sub=value".to_owned())
        );
        assert_eq!(
            parse(json!({"a": {"b": 1}}), &["a.b.c=1"]),
            Err(
                "--input \"a.b.c=1\": cannot set \"a.b.c\" because \"a.b\" is not an object"
                    .to_owned()
            )
        );
    }
}
