//! Any text as a workflow file: parsing and validation return errors, never
//! panic, and stay within their budgets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ork_domain::parse::{ParseOptions, parse_workflow, referenced_files};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(def) = parse_workflow(text, &ParseOptions::default()) {
        let _ = referenced_files(&def);
        let _ = ork_domain::dag::Dag::new(&def);
    }
});
