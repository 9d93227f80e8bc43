//! Any text as a template string: parsing, and resolving against a fixed
//! context, return errors, never panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use ork_domain::template::{ResolveContext, TaskOutputs, parse_templates, resolve_input, task_refs};
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_templates(text);
    let input = json!({ "a": text, "b": [text, { "c": text }] });
    let _ = task_refs(&input);
    let run_input = json!({ "date": "2026-11-26", "n": 3, "list": [1, 2, { "x": "y" }] });
    let mut outputs = BTreeMap::new();
    outputs.insert("t".to_owned(), TaskOutputs::Single(json!({ "files": ["a", "b"], "n": 2 })));
    outputs.insert("many".to_owned(), TaskOutputs::Many(vec![json!(1), Value::Null, json!({ "k": [1] })]));
    let item = json!({ "file": "a.csv" });
    let ctx = ResolveContext {
        run_input: &run_input,
        outputs: &outputs,
        item: Some(&item),
        parallel_index: Some(1),
        parallel_count: Some(3),
    };
    let _ = resolve_input(&input, &ctx);
});
