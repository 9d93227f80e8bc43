//! Tests of parsing and validation. Error messages are snapshots: the text a
//! user reads is the contract, so any change to it shows up in review.

use std::collections::BTreeSet;

use expect_test::{Expect, expect};
use serde_json::json;

use super::*;
use crate::model::{EnvValue, FieldRef, ImagePullPolicy, OnFailure, Parallelism, RetryBackoff};

pub(crate) const ETL: &str = include_str!("../../testdata/etl.yaml");
pub(crate) const MINIMAL: &str = include_str!("../../testdata/minimal.yaml");
pub(crate) const FANOUT: &str = include_str!("../../testdata/fanout.yaml");

fn parse(yaml: &str) -> Result<WorkflowDefinition, ValidationErrors> {
    parse_workflow(
        yaml,
        &ParseOptions {
            source: "etl.yaml",
            files: None,
            ..Default::default()
        },
    )
}

/// Parses `yaml`, which must fail, and compares the printed errors.
fn check(yaml: &str, expected: Expect) {
    match parse(yaml) {
        Ok(def) => panic!("expected errors, parsed {def:#?}"),
        Err(errors) => expected.assert_eq(&errors.to_string()),
    }
}

/// A valid one-task workflow with `extra` appended to the task.
fn task_with(extra: &str) -> String {
    format!("name: wf\ntasks:\n  - name: a\n    file: a.sh\n{extra}")
}

#[test]
fn parses_the_etl_example() {
    let def = parse(ETL).unwrap();
    assert_eq!(def.name, "nightly-etl");
    assert_eq!(def.schedule.as_deref(), Some("0 2 * * *"));
    assert_eq!(def.timezone, "Europe/Paris");
    assert_eq!(def.concurrency, Some(1));
    assert_eq!(
        def.types["report"]["properties"]["total"]["type"],
        "integer"
    );
    let names: Vec<_> = def.tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["discover", "process", "report"]);

    let discover = &def.tasks[0];
    assert_eq!(discover.timeout_seconds, 60);
    assert_eq!(
        discover.input,
        json!({"date": "{{ run.input.date }}", "prefix": "raw/{{ run.input.date }}/"})
    );

    let process = &def.tasks[1];
    assert_eq!(process.executor, "subprocess");
    assert_eq!(process.config_file.as_deref(), Some("config/process.toml"));
    assert_eq!(
        process.parallel,
        Some(Parallelism::ForEach(FieldRef {
            task: "discover".into(),
            path: vec!["files".into()]
        }))
    );
    assert_eq!(process.concurrency, Some(50));
    assert_eq!((process.retries, process.retry_delay_seconds), (3, 5));
    assert_eq!(process.retry_backoff, RetryBackoff::Exponential);
    assert_eq!(process.retry_max_delay_seconds, Some(60));
    assert_eq!(process.resources.cpu.as_deref(), Some("2"));
    assert_eq!(process.resources.memory.as_deref(), Some("512Mi"));
    assert_eq!(process.env["LOG_LEVEL"], EnvValue::Literal("debug".into()));
    assert_eq!(process.env["WORKERS"], EnvValue::Literal("4".into()));
    assert_eq!(
        process.env["API_TOKEN"],
        EnvValue::Secret("api-token".into())
    );
    assert_eq!(process.env["HOME_DIR"], EnvValue::FromEnv("HOME".into()));

    let report = &def.tasks[2];
    assert_eq!(report.on_failure, OnFailure::Run);
    assert_eq!(report.output_type.as_deref(), Some("report"));
}

#[test]
fn applies_defaults() {
    let def = parse(MINIMAL).unwrap();
    assert_eq!(def.schedule, None);
    assert_eq!(def.timezone, "UTC");
    assert_eq!(def.concurrency, None);
    let t = &def.tasks[0];
    assert_eq!(t.executor, "subprocess");
    assert_eq!(t.input, serde_json::Value::Null);
    assert!(t.depends_on.is_empty());
    assert_eq!(
        (t.timeout_seconds, t.retries, t.retry_delay_seconds),
        (3600, 0, 0)
    );
    assert_eq!(t.retry_backoff, RetryBackoff::Fixed);
    assert_eq!(t.retry_max_delay_seconds, None);
    assert_eq!(t.parallel, None);
    assert_eq!(t.on_failure, OnFailure::Skip);
    assert!(t.env.is_empty());
}

#[test]
fn parses_static_and_count_fan_outs() {
    let def = parse(FANOUT).unwrap();
    assert_eq!(
        def.tasks[1].parallel,
        Some(Parallelism::CountRef(FieldRef {
            task: "plan".into(),
            path: vec!["shards".into()]
        }))
    );
    assert_eq!(def.tasks[2].parallel, Some(Parallelism::Static(4)));
}

#[test]
fn accepts_six_field_cron_and_null_optional_fields() {
    let yaml = "name: wf\nschedule: '*/10 * * * * *'\ntimezone:\ntasks:\n  - name: a\n    file: a.sh\n    depends_on:\n";
    let def = parse(yaml).unwrap();
    assert_eq!(def.schedule.as_deref(), Some("*/10 * * * * *"));
    assert_eq!(def.timezone, "UTC");
}

#[test]
fn dedupes_repeated_depends_on_entries() {
    let yaml = "name: wf\ntasks:\n  - {name: a, file: a.sh}\n  - {name: b, file: b.sh, depends_on: [a, a]}\n";
    assert_eq!(parse(yaml).unwrap().tasks[1].depends_on, ["a"]);
}

#[test]
fn referenced_files_are_deduplicated_in_order() {
    let yaml = "name: wf\ntasks:\n  - {name: a, file: s.sh, config_file: c.toml}\n  - {name: b, file: s.sh}\n  - {name: c, file: t.sh, config_file: c.toml}\n";
    let def = parse(yaml).unwrap();
    assert_eq!(referenced_files(&def), ["s.sh", "c.toml", "t.sh"]);
}

#[test]
fn files_must_be_among_those_sent() {
    let files: BTreeSet<String> = [
        "scripts/discover.sh",
        "scripts/process.py",
        "config/process.toml",
        "scripts/report.sh",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let opts = ParseOptions {
        source: "etl.yaml",
        files: Some(&files),
        ..Default::default()
    };
    assert!(parse_workflow(ETL, &opts).is_ok());

    let mut fewer = files.clone();
    fewer.remove("config/process.toml");
    fewer.remove("scripts/report.sh");
    let opts = ParseOptions {
        source: "etl.yaml",
        files: Some(&fewer),
        ..Default::default()
    };
    let errors = parse_workflow(ETL, &opts).unwrap_err();
    expect![[r#"
        etl.yaml:28:18: task `process`, field `config_file`: file `config/process.toml` was not found; paths are relative to the workflow file
        etl.yaml:47:11: task `report`, field `file`: file `scripts/report.sh` was not found; paths are relative to the workflow file"#]].assert_eq(&errors.to_string());
}

#[test]
fn error_fields_are_structured() {
    let errors = parse(&task_with("    depends_on: [b]\n")).unwrap_err();
    assert_eq!(
        errors.0,
        [ValidationError {
            source: "etl.yaml".into(),
            task: Some("a".into()),
            field: Some("depends_on".into()),
            line: Some(5),
            column: Some(18),
            message: "unknown task `b`".into(),
        }]
    );
}

#[test]
fn display_without_source_or_position() {
    let e = ValidationError {
        source: String::new(),
        task: None,
        field: Some("tasks".into()),
        line: Some(3),
        column: None,
        message: "boom".into(),
    };
    assert_eq!(e.to_string(), "line 3: field `tasks`: boom");
    let e = ValidationError {
        line: None,
        task: Some("t".into()),
        field: None,
        ..e
    };
    assert_eq!(e.to_string(), "task `t`: boom");
}

#[test]
fn cron_day_of_week_follows_unix_numbering() {
    use chrono::{Datelike, TimeZone, Utc, Weekday};
    let first = |expr: &str| {
        let after = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(); // a Thursday
        cron_schedule(expr)
            .unwrap()
            .after(&after)
            .next()
            .unwrap()
            .weekday()
    };
    assert_eq!(first("0 9 * * 1"), Weekday::Mon);
    assert_eq!(first("0 9 * * 0"), Weekday::Sun);
    assert_eq!(first("0 9 * * 7"), Weekday::Sun);
    assert_eq!(first("0 9 * * 6-7"), Weekday::Sat);
    assert_eq!(first("0 9 * * mon"), Weekday::Mon);
    assert_eq!(unix_day_of_week("1-5").unwrap(), "2,3,4,5,6");
    assert_eq!(unix_day_of_week("*/2").unwrap(), "*/2");
    assert_eq!(unix_day_of_week("0,7").unwrap(), "1");
    assert_eq!(unix_day_of_week("3/2").unwrap(), "4,6");
    assert!(unix_day_of_week("8").is_err());
    assert!(unix_day_of_week("5-2").is_err());
    assert!(unix_day_of_week("1/0").is_err());
}

// ---- one snapshot per kind of error ----

#[test]
fn yaml_syntax_error() {
    check(
        "name: wf\ntasks: [\n",
        expect!["etl.yaml:2:8: invalid yaml: unclosed bracket '['"],
    );
}

#[test]
fn duplicate_yaml_key() {
    check(
        "name: wf\nname: other\ntasks: []\n",
        expect!["etl.yaml:2:1: invalid yaml: duplicate key `name`; keep only one of them"],
    );
}

#[test]
fn empty_file_and_wrong_top_level() {
    check(
        "",
        expect!["etl.yaml:1:1: the file is empty; a workflow needs `name` and `tasks`"],
    );
    check(
        "- a\n- b\n",
        expect![
            "etl.yaml:1:1: expected a mapping with `name` and `tasks` at the top, found a list"
        ],
    );
}

#[test]
fn file_too_large() {
    let yaml = format!("name: wf\n# {}\n", "x".repeat(MAX_YAML_BYTES));
    check(
        &yaml,
        expect![
            "etl.yaml: the workflow file is 1048588 bytes, more than the limit of 1048576; move large data out of the YAML (the server's --max-yaml-bytes)"
        ],
    );
}

#[test]
fn missing_name_and_tasks() {
    check(
        "schedule: '0 2 * * *'\n",
        expect![[r#"
        etl.yaml:1:1: field `name`: missing `name`: add e.g. `name: nightly-etl` at the top
        etl.yaml:1:1: field `tasks`: missing `tasks`: add a list of tasks"#]],
    );
}

#[test]
fn invalid_workflow_names() {
    check(
        "name: Nightly ETL\ntasks: [{name: a, file: a.sh}]\n",
        expect![
            "etl.yaml:1:7: field `name`: `Nightly ETL` is not a valid name; use lowercase letters, digits, `_` and `-`, starting with a letter or digit"
        ],
    );
    check(
        &format!(
            "name: {}\ntasks: [{{name: a, file: a.sh}}]\n",
            "a".repeat(64)
        ),
        expect!["etl.yaml:1:7: field `name`: the name is 64 characters long; the limit is 63"],
    );
    check(
        "name: 12\ntasks: [{name: a, file: a.sh}]\n",
        expect!["etl.yaml:1:7: field `name`: expected text, found the number `12`"],
    );
}

#[test]
fn unknown_top_level_field() {
    check(
        "name: wf\nschedul: '0 2 * * *'\ntask: []\ntasks: [{name: a, file: a.sh}]\n",
        expect![[r#"
        etl.yaml:2:1: field `schedul`: unknown field (did you mean `schedule`?)
        etl.yaml:3:1: field `task`: unknown field (did you mean `tasks`?)"#]],
    );
}

#[test]
fn invalid_schedule() {
    check(
        "name: wf\nschedule: '0 2 * *'\ntasks: [{name: a, file: a.sh}]\n",
        expect![
            "etl.yaml:2:11: field `schedule`: cron expression `0 2 * *` has 4 field(s); write 5 (minute hour day-of-month month day-of-week, e.g. `0 2 * * *`) or 6 with seconds first"
        ],
    );
    check(
        "name: wf\nschedule: '0 25 * * *'\ntasks: [{name: a, file: a.sh}]\n",
        expect![
            "etl.yaml:2:11: field `schedule`: invalid cron expression `0 25 * * *`: hours must be less than 23. ('25' specified.)"
        ],
    );
    check(
        "name: wf\nschedule: '0 2 * * 9'\ntasks: [{name: a, file: a.sh}]\n",
        expect![
            "etl.yaml:2:11: field `schedule`: invalid day of week `9`; use 0-7 (0 and 7 are Sunday) or names like `mon`"
        ],
    );
}

#[test]
fn invalid_timezone() {
    check(
        "name: wf\ntimezone: Mars/Olympus\ntasks: [{name: a, file: a.sh}]\n",
        expect![
            "etl.yaml:2:11: field `timezone`: unknown time zone `Mars/Olympus`; use an IANA name such as `UTC` or `Europe/Paris`"
        ],
    );
}

#[test]
fn invalid_workflow_concurrency() {
    check(
        "name: wf\nconcurrency: 0\ntasks: [{name: a, file: a.sh}]\n",
        expect!["etl.yaml:2:14: field `concurrency`: must be at least 1"],
    );
}

#[test]
fn invalid_tasks_list() {
    check(
        "name: wf\ntasks: []\n",
        expect!["etl.yaml:2:8: field `tasks`: `tasks` is empty; add at least one task"],
    );
    check(
        "name: wf\ntasks: {a: 1}\n",
        expect!["etl.yaml:2:8: field `tasks`: expected a list of tasks, found a mapping"],
    );
    check(
        "name: wf\ntasks:\n  - just-a-string\n",
        expect![
            "etl.yaml:3:5: field `tasks`: expected a task mapping with at least `name`, found the string `just-a-string`"
        ],
    );
}

#[test]
fn too_many_tasks() {
    let mut yaml = String::from("name: wf\ntasks:\n");
    for i in 0..=MAX_TASKS {
        yaml.push_str(&format!("  - {{name: t{i}, file: t.sh}}\n"));
    }
    check(
        &yaml,
        expect![
            "etl.yaml:3:3: field `tasks`: 1001 tasks is more than the limit of 1000; split the workflow (the server's --max-tasks)"
        ],
    );
}

#[test]
fn task_without_valid_name() {
    check(
        "name: wf\ntasks:\n  - file: a.sh\n  - name: Load_Data\n    file: b.sh\n",
        expect![[r#"
        etl.yaml:3:5: field `name`: the task has no `name`; add e.g. `name: extract`
        etl.yaml:4:11: field `name`: `Load_Data` is not a valid name; use lowercase letters, digits, `_` and `-`, starting with a letter or digit"#]],
    );
}

#[test]
fn unknown_task_field() {
    check(
        &task_with("    dependson: [x]\n    colour: red\n"),
        expect![[r#"
            etl.yaml:5:5: task `a`, field `dependson`: unknown field (did you mean `depends_on`?)
            etl.yaml:6:5: task `a`, field `colour`: unknown field; known fields are name, executor, file, command, python, handler, config_file, input, depends_on, timeout_seconds, retries, retry_delay_seconds, retry_backoff, retry_max_delay_seconds, parallel, concurrency, resources, image, image_pull_policy, env, on_failure, output_type"#]],
    );
}

#[test]
fn duplicate_task_names() {
    check(
        "name: wf\ntasks:\n  - name: a\n    file: a.sh\n  - name: a\n    file: b.sh\n",
        expect![
            "etl.yaml:5:11: task `a`, field `name`: duplicate task name `a` (first used on line 3); task names must be unique"
        ],
    );
}

#[test]
fn unknown_executor() {
    check(
        &task_with("    executor: lambda\n"),
        expect![
            "etl.yaml:5:15: task `a`, field `executor`: unknown executor `lambda`; known executors: subprocess, workers, docker, kubernetes, fargate, cloudrun, containerapp"
        ],
    );
}

#[test]
fn missing_and_unsafe_files() {
    check(
        "name: wf\ntasks:\n  - name: a\n",
        expect![[
            r#"etl.yaml:3:5: task `a`, field `file`: a subprocess task needs `file` (a script relative to the workflow file) or `command` (a program and its arguments, e.g. ["bash", "-c", "echo hi"])"#
        ]],
    );
    check(
        "name: wf\ntasks:\n  - name: a\n    file: /usr/bin/env\n  - name: b\n    file: ../secret.sh\n    config_file: C:\\x.toml\n",
        expect![[r#"
            etl.yaml:4:11: task `a`, field `file`: `/usr/bin/env` is an absolute path; write it relative to the workflow file
            etl.yaml:6:11: task `b`, field `file`: `../secret.sh` leaves the workflow's folder through `..`; move the file next to the workflow
            etl.yaml:7:18: task `b`, field `config_file`: `C:\x.toml` is an absolute path; write it relative to the workflow file"#]],
    );
}

#[test]
fn unknown_and_self_dependencies() {
    check(
        "name: wf\ntasks:\n  - name: extract\n    file: e.sh\n  - name: load\n    file: l.sh\n    depends_on: [extrct, load, nothing]\n",
        expect![[r#"
            etl.yaml:7:18: task `load`, field `depends_on`: unknown task `extrct` (did you mean `extract`?)
            etl.yaml:7:26: task `load`, field `depends_on`: a task cannot depend on itself; remove it
            etl.yaml:7:32: task `load`, field `depends_on`: unknown task `nothing`"#]],
    );
    check(
        &task_with("    depends_on: b\n"),
        expect![
            "etl.yaml:5:17: task `a`, field `depends_on`: expected a list of task names, found the string `b`"
        ],
    );
}

#[test]
fn dependency_cycle() {
    check(
        "name: wf\ntasks:\n  - name: a\n    file: a.sh\n    depends_on: [c]\n  - name: b\n    file: b.sh\n    depends_on: [a]\n  - name: c\n    file: c.sh\n    depends_on: [b]\n",
        expect![
            "etl.yaml:5:18: task `a`, field `depends_on`: dependency cycle: a -> b -> c -> a; remove one of these dependencies"
        ],
    );
}

#[test]
fn template_reads_unknown_or_non_upstream_tasks() {
    check(
        "name: wf\ntasks:\n  - name: extract\n    file: e.sh\n  - name: load\n    file: l.sh\n    input:\n      a: '{{ tasks.extrct.output }}'\n      b: 'x {{ tasks.extract.output.rows }}'\n      c: ['{{ tasks.load.output }}']\n",
        expect![[r#"
            etl.yaml:8:10: task `load`, field `input`: template `{{ tasks.extrct.output }}` reads unknown task `extrct` (did you mean `extract`?)
            etl.yaml:9:10: task `load`, field `input`: template `{{ tasks.extract.output.rows }}` reads task `extract`, which is not upstream of `load`; add `extract` to depends_on
            etl.yaml:10:11: task `load`, field `input`: template `{{ tasks.load.output }}` reads the task's own output; a task can only read upstream outputs"#]],
    );
}

#[test]
fn template_output_versus_outputs() {
    check(
        "name: wf\ntasks:\n  - name: one\n    file: a.sh\n  - name: many\n    file: b.sh\n    parallel: 3\n  - name: last\n    file: c.sh\n    depends_on: [one, many]\n    input:\n      a: '{{ tasks.many.output }}'\n      b: '{{ tasks.one.outputs }}'\n",
        expect![[r#"
            etl.yaml:12:10: task `last`, field `input`: template `{{ tasks.many.output }}` reads one output, but task `many` runs several instances (it has `parallel`); use `tasks.many.outputs` for the list of their outputs
            etl.yaml:13:10: task `last`, field `input`: template `{{ tasks.one.outputs }}` reads a list of outputs, but task `one` runs once; use `tasks.one.output`"#]],
    );
}

#[test]
fn template_item_and_parallel_outside_fan_outs() {
    check(
        &task_with(
            "    parallel: 2\n    input: ['{{ item }}', '{{ parallel.index }}']\n  - name: b\n    file: b.sh\n    input: '{{ parallel.count }}'\n",
        ),
        expect![[r#"
            etl.yaml:6:13: task `a`, field `input`: template `{{ item }}` reads `item`, which only tasks with `parallel: {for_each: ...}` have
            etl.yaml:9:12: task `b`, field `input`: template `{{ parallel.count }}` reads `parallel`, which only tasks with `parallel` set have"#]],
    );
}

#[test]
fn template_syntax_errors() {
    check(
        &task_with(
            "    input:\n      a: '{{ run.input.date'\n      b: '{{ foo.bar }}'\n      c: '{{ tasks.x }}'\n      d: '{{ }}'\n      e: '{{ run.input..x }}'\n",
        ),
        expect![[r#"
            etl.yaml:6:10: task `a`, field `input`: unterminated `{{` in `{{ run.input.date`; close the template with `}}`
            etl.yaml:7:10: task `a`, field `input`: unknown name `foo` in template `{{ foo.bar }}`; templates start with `run.input`, `tasks.<task>.output`, `tasks.<task>.outputs`, `item` or `parallel`
            etl.yaml:8:10: task `a`, field `input`: invalid template `{{ tasks.x }}`: write `tasks.<task>.output` or `tasks.<task>.outputs`
            etl.yaml:9:10: task `a`, field `input`: invalid template `{{ }}`: it is empty; write e.g. `{{ run.input.date }}`
            etl.yaml:10:10: task `a`, field `input`: invalid template `{{ run.input..x }}`: empty name between dots"#]],
    );
}

#[test]
fn invalid_parallel() {
    check(
        "name: wf\ntasks:\n  - name: a\n    file: a.sh\n    parallel: 0\n  - name: b\n    file: b.sh\n    parallel: {each: a.files}\n  - name: c\n    file: c.sh\n    parallel: {for_each: files}\n  - name: d\n    file: d.sh\n    parallel: [1]\n",
        expect![[r#"
            etl.yaml:5:15: task `a`, field `parallel`: must be at least 1
            etl.yaml:8:16: task `b`, field `parallel`: expected a number of instances (e.g. `4`), `{count: task.field}` or `{for_each: task.field}`, found key `each`
            etl.yaml:11:26: task `c`, field `parallel`: `files` is not a reference to an output field; write `task.field`, e.g. `discover.files`
            etl.yaml:14:15: task `d`, field `parallel`: expected a number of instances (e.g. `4`), `{count: task.field}` or `{for_each: task.field}`, found a list"#]],
    );
}

#[test]
fn parallel_reads_unknown_non_upstream_or_fanned_out_tasks() {
    check(
        "name: wf\ntasks:\n  - name: list\n    file: a.sh\n  - name: many\n    file: b.sh\n    parallel: 2\n  - name: c\n    file: c.sh\n    parallel: {for_each: lst.files}\n  - name: d\n    file: d.sh\n    parallel: {count: list.n}\n  - name: e\n    file: e.sh\n    depends_on: [many]\n    parallel: {count: many.n}\n  - name: f\n    file: f.sh\n    parallel: {count: f.n}\n",
        expect![[r#"
            etl.yaml:10:15: task `c`, field `parallel`: `lst.files` reads unknown task `lst` (did you mean `list`?)
            etl.yaml:13:15: task `d`, field `parallel`: `list.n` reads task `list`, which is not upstream of `d`; add `list` to depends_on
            etl.yaml:17:15: task `e`, field `parallel`: `many.n` reads task `many`, which runs several instances; fan out from a task that runs once
            etl.yaml:20:15: task `f`, field `parallel`: `f.n` reads the task's own output; fan out from an upstream task"#]],
    );
}

#[test]
fn invalid_numbers() {
    check(
        &task_with(
            "    timeout_seconds: 0\n    retries: -1\n    retry_delay_seconds: soon\n    concurrency: 0\n    retry_max_delay_seconds: 99999999999\n",
        ),
        expect![[r#"
            etl.yaml:5:22: task `a`, field `timeout_seconds`: must be greater than 0; it is the most seconds one attempt may run
            etl.yaml:6:14: task `a`, field `retries`: expected a whole number from 0 to 4294967295, found the number `-1`
            etl.yaml:7:26: task `a`, field `retry_delay_seconds`: expected a whole number, found the string `soon`
            etl.yaml:8:18: task `a`, field `concurrency`: must be at least 1
            etl.yaml:9:30: task `a`, field `retry_max_delay_seconds`: expected a whole number from 0 to 4294967295, found the number `99999999999`"#]],
    );
}

#[test]
fn invalid_retry_settings() {
    check(
        &task_with(
            "    retry_backoff: linear\n    retry_delay_seconds: 30\n    retry_max_delay_seconds: 10\n",
        ),
        expect![[r#"
            etl.yaml:5:20: task `a`, field `retry_backoff`: unknown backoff `linear`; use `fixed` or `exponential`
            etl.yaml:7:30: task `a`, field `retry_max_delay_seconds`: must be at least retry_delay_seconds (30), or the cap would shorten every delay"#]],
    );
}

#[test]
fn invalid_env() {
    check(
        &task_with(
            "    env:\n      ORK_RUN_ID: x\n      1BAD: x\n      TOKEN: {secret: ''}\n      ESCAPE: {secret: '../etc/passwd'}\n      PATH_COPY: {from_env: 'not valid'}\n      LIST: [1]\n      OTHER: {value: 1}\n",
        ),
        expect![[r#"
            etl.yaml:6:7: task `a`, field `env.ORK_RUN_ID`: names starting with `ORK_` are reserved for ork; rename `ORK_RUN_ID`
            etl.yaml:7:7: task `a`, field `env.1BAD`: `1BAD` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit
            etl.yaml:8:23: task `a`, field `env.TOKEN`: the secret name is empty
            etl.yaml:9:24: task `a`, field `env.ESCAPE`: `../etc/passwd` is not a valid secret name; use 1 to 128 letters, digits, `_`, `-` and `.`, not starting with `.`
            etl.yaml:10:29: task `a`, field `env.PATH_COPY`: `not valid` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit
            etl.yaml:11:13: task `a`, field `env.LIST`: expected a value, `{secret: NAME}` or `{from_env: VAR}`, found a list
            etl.yaml:12:14: task `a`, field `env.OTHER`: expected a value, `{secret: NAME}` or `{from_env: VAR}`, found a mapping"#]],
    );
}

#[test]
fn invalid_on_failure_and_resources() {
    check(
        &task_with("    on_failure: continue\n    resources: {cpu: [1], memroy: 1Gi, gpu: -1}\n"),
        expect![[r#"
            etl.yaml:5:17: task `a`, field `on_failure`: unknown value `continue`; use `skip` or `run`
            etl.yaml:6:22: task `a`, field `resources.cpu`: expected a quantity such as "2" or "512Mi", found a list
            etl.yaml:6:27: task `a`, field `resources.memroy`: unknown field (did you mean `memory`?)
            etl.yaml:6:45: task `a`, field `resources.gpu`: expected a whole number from 0 to 4294967295, found the number `-1`"#]],
    );
}

#[test]
fn unknown_output_type() {
    check(
        &task_with("    output_type: report\n"),
        expect![
            "etl.yaml:5:18: task `a`, field `output_type`: unknown type `report`; declare it under `types` at the top of the workflow"
        ],
    );
    check(
        &format!(
            "types:\n  reports: {{type: object}}\n  count: 3\n{}    output_type: report\n",
            task_with("")
        ),
        expect![[r#"
            etl.yaml:3:10: field `types`: type `count` must be a JSON-Schema-style mapping, found the number `3`
            etl.yaml:8:18: task `a`, field `output_type`: unknown type `report` (did you mean `reports`?); declared types: reports"#]],
    );
}

#[test]
fn reports_all_errors_at_once_in_file_order() {
    check(
        "name: Bad\nschedule: nope\ntasks:\n  - name: a\n    timeout_seconds: 0\n  - name: b\n    file: b.sh\n    depends_on: [a, zz]\n    on_failur: run\n",
        expect![[r#"
            etl.yaml:1:7: field `name`: `Bad` is not a valid name; use lowercase letters, digits, `_` and `-`, starting with a letter or digit
            etl.yaml:2:11: field `schedule`: cron expression `nope` has 1 field(s); write 5 (minute hour day-of-month month day-of-week, e.g. `0 2 * * *`) or 6 with seconds first
            etl.yaml:4:5: task `a`, field `file`: a subprocess task needs `file` (a script relative to the workflow file) or `command` (a program and its arguments, e.g. ["bash", "-c", "echo hi"])
            etl.yaml:5:22: task `a`, field `timeout_seconds`: must be greater than 0; it is the most seconds one attempt may run
            etl.yaml:8:21: task `b`, field `depends_on`: unknown task `zz`
            etl.yaml:9:5: task `b`, field `on_failur`: unknown field (did you mean `on_failure`?)"#]],
    );
}

// ---- hostile input: bounded and fast, never a panic ----

#[test]
fn refuses_billion_laughs() {
    let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        yaml.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    yaml.push_str("name: wf\ntasks: [{name: a, file: a.sh, input: *a9}]\n");
    let errors = parse(&yaml).unwrap_err();
    expect!["etl.yaml:5:45: invalid yaml: the document expands to more than 100000 values (aliases count once per use); shrink it (the server's --max-yaml-nodes)"].assert_eq(&errors.to_string());
}

#[test]
fn refuses_deep_nesting() {
    for yaml in [
        format!(
            "name: wf\ninput: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
        format!(
            "name: wf\ninput: {}1{}\n",
            "{a: ".repeat(5_000),
            "}".repeat(5_000)
        ),
        (0..200)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect(),
    ] {
        let errors = parse(&yaml).unwrap_err();
        assert!(errors.0[0].message.starts_with("invalid yaml:"), "{errors}");
        assert_eq!(errors.0.len(), 1, "{errors}");
    }
    let nested = |depth: usize| {
        format!(
            "name: wf\ntasks:\n  - name: a\n    file: a.sh\n    input: {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    // The limit leaves 21 levels of nesting to a task's input, and refuses the next.
    assert!(parse(&nested(21)).is_ok());
    expect!["etl.yaml:5:33: invalid yaml: nesting is deeper than 24 levels; flatten the data (the server's --max-yaml-depth)"]
        .assert_eq(&parse(&nested(22)).unwrap_err().to_string());
}

fn parse_with(yaml: &str, limits: ParseLimits) -> Result<WorkflowDefinition, ValidationErrors> {
    parse_workflow(
        yaml,
        &ParseOptions {
            source: "etl.yaml",
            files: None,
            limits,
            ..Default::default()
        },
    )
}

#[test]
fn configured_size_limit_accepts_at_and_refuses_past() {
    let yaml = "name: wf\ntasks: [{name: a, file: a.sh}]\n";
    let at = ParseLimits {
        max_bytes: yaml.len(),
        ..ParseLimits::default()
    };
    assert!(parse_with(yaml, at).is_ok());
    let past = ParseLimits {
        max_bytes: yaml.len() - 1,
        ..ParseLimits::default()
    };
    expect!["etl.yaml: the workflow file is 40 bytes, more than the limit of 39; move large data out of the YAML (the server's --max-yaml-bytes)"]
        .assert_eq(&parse_with(yaml, past).unwrap_err().to_string());
}

#[test]
fn configured_depth_limit_accepts_at_and_refuses_past() {
    // The task's input sits 3 levels down; `depth` more brackets nest below it.
    let nested = |depth: usize| {
        format!(
            "name: wf\ntasks:\n  - name: a\n    file: a.sh\n    input: {}1{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        )
    };
    let limits = ParseLimits {
        max_depth: 8,
        ..ParseLimits::default()
    };
    assert!(parse_with(&nested(5), limits).is_ok());
    expect!["etl.yaml:5:17: invalid yaml: nesting is deeper than 8 levels; flatten the data (the server's --max-yaml-depth)"]
        .assert_eq(&parse_with(&nested(6), limits).unwrap_err().to_string());
    // No configuration goes past what the parser's stack allows.
    let huge = ParseLimits {
        max_depth: 10_000,
        ..ParseLimits::default()
    };
    assert!(parse_with(&nested(22), huge).is_err());
}

#[test]
fn configured_alias_expansion_limit_accepts_at_and_refuses_past() {
    // An alias of a 10-item list used `uses` times in the task's input: the
    // document holds 26 values, and each use adds 11 (the list and its items).
    let doc = |uses: usize| {
        format!(
            "name: wf\ntasks:\n  - name: a\n    file: a.sh\n    input: {{x: &x [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], y: [{}]}}\n",
            vec!["*x"; uses].join(", ")
        )
    };
    let limits = ParseLimits {
        max_nodes: 26 + 7 * 11,
        ..ParseLimits::default()
    };
    assert!(parse_with(&doc(7), limits).is_ok());
    expect!["etl.yaml:5:84: invalid yaml: the document expands to more than 103 values (aliases count once per use); shrink it (the server's --max-yaml-nodes)"]
        .assert_eq(&parse_with(&doc(8), limits).unwrap_err().to_string());
}

#[test]
fn configured_task_limit_accepts_at_and_refuses_past() {
    let tasks = |n: usize| {
        let mut yaml = String::from("name: wf\ntasks:\n");
        for i in 0..n {
            yaml.push_str(&format!("  - {{name: t{i}, file: t.sh}}\n"));
        }
        yaml
    };
    let limits = ParseLimits {
        max_tasks: 3,
        ..ParseLimits::default()
    };
    assert!(parse_with(&tasks(3), limits).is_ok());
    expect!["etl.yaml:3:3: field `tasks`: 4 tasks is more than the limit of 3; split the workflow (the server's --max-tasks)"]
        .assert_eq(&parse_with(&tasks(4), limits).unwrap_err().to_string());
}

/// A tiny deterministic generator, so the test needs no extra dependency
/// and fails the same way every time.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn never_panics_on_malformed_input() {
    const PIECES: &[&str] = &[
        "name: ",
        "tasks:",
        "\n",
        "  ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "&a ",
        "*a",
        "'",
        "\"",
        "{{",
        "}}",
        "depends_on: ",
        "parallel: ",
        "file: x",
        "input: ",
        "env: ",
        "!!binary ",
        "? ",
        "|",
        ">",
        "#",
        "\t",
        "\u{feff}",
        "ä",
        "<<: ",
        "0x1F",
        "-1",
        ".inf",
        "~",
        "%YAML 1.2\n",
        "---\n",
        "...\n",
        "\\",
        "\0",
        "schedule: ",
        "*/0 * * * *",
        "for_each: a.b",
        "ORK_X: 1",
    ];
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for _ in 0..3000 {
        let mut yaml = String::new();
        for _ in 0..(rng.next() % 40) {
            let r = rng.next();
            if r.is_multiple_of(5) {
                // Raw bytes, made valid UTF-8 the lossy way, as a server would.
                let bytes: Vec<u8> = (0..(r % 8)).map(|_| rng.next() as u8).collect();
                yaml.push_str(&String::from_utf8_lossy(&bytes));
            } else {
                yaml.push_str(PIECES[(r % PIECES.len() as u64) as usize]);
            }
        }
        let _ = parse(&yaml);
    }
    // Mutations of a valid file: cut at every byte, which covers
    // half-written mappings, strings and templates.
    for cut in 0..ETL.len() {
        if ETL.is_char_boundary(cut) {
            let _ = parse(&ETL[..cut]);
        }
    }
}

#[test]
fn yaml_1_1_booleans_stay_strings() {
    let yaml =
        "name: w\ntasks:\n  - name: a\n    file: a.sh\n    input: { y: yes, n: off, t: true }\n";
    let def = parse_workflow(
        yaml,
        &ParseOptions {
            source: "w.yaml",
            files: None,
            ..Default::default()
        },
    )
    .expect("valid");
    assert_eq!(
        def.tasks[0].input,
        serde_json::json!({"y": "yes", "n": "off", "t": true})
    );
}

// ---- catchup, type declarations and typed fan-outs ----

#[test]
fn catchup_policy() {
    assert_eq!(
        parse(MINIMAL).unwrap().catchup,
        crate::model::Catchup::Latest
    );
    let with = |policy: &str| {
        format!(
            "name: wf\nschedule: '0 * * * *'\ncatchup: {policy}\ntasks: [{{name: a, file: a.sh}}]\n"
        )
    };
    assert_eq!(
        parse(&with("skip")).unwrap().catchup,
        crate::model::Catchup::Skip
    );
    assert_eq!(
        parse(&with("all")).unwrap().catchup,
        crate::model::Catchup::All
    );
    check(
        &with("everything"),
        expect![
            "etl.yaml:3:10: field `catchup`: unknown catchup policy `everything`; use `skip` (drop missed fires), `latest` (run the most recent one, the default) or `all` (run each, up to 100)"
        ],
    );
    check(
        &with("[all]"),
        expect!["etl.yaml:3:10: field `catchup`: expected text, found a list"],
    );
}

#[test]
fn type_declaration_errors_point_at_the_keyword() {
    check(
        "name: wf\ntypes:\n  file_info:\n    type: object\n    properties:\n      path: {type: string, pattern: '^/'}\n      size: {type: int}\n  listing:\n    type: object\n    properties:\n      files:\n        type: array\n        items: file_info\n      next: {$ref: '#/types/listin'}\ntasks: [{name: a, file: a.sh}]\n",
        expect![[r##"
            etl.yaml:6:28: field `types.file_info`: at /properties/path: unsupported keyword `pattern`; ork checks only type, properties, required, additionalProperties, items, enum, const, minimum, maximum, minLength, maxLength, minItems, maxItems, $ref
            etl.yaml:7:14: field `types.file_info`: at /properties/size: unknown type `int`; use object, array, string, integer, number, boolean or null
            etl.yaml:13:16: field `types.listing`: at /properties/files/items: expected a schema mapping, found the string `file_info`; to use the declared type, write `{$ref: "#/types/file_info"}`
            etl.yaml:14:14: field `types.listing`: at /properties/next: `$ref: #/types/listin` names undeclared type `listin` (did you mean `listing`?); declared types: file_info, listing"##]],
    );
}

const TYPED_FANOUT: &str = "name: wf
types:
  file_info: {type: object, properties: {path: {type: string}}}
  listing:
    type: object
    additionalProperties: false
    properties:
      files: {type: array, items: {$ref: '#/types/file_info'}}
      count: {type: integer}
      label: {type: string}
      meta: {type: object}
  alias: {$ref: '#/types/listing'}
tasks:
  - name: list
    file: list.sh
    output_type: alias
  - name: open
    file: open.sh
    output_type: file_info
";

fn typed_fanout(extra: &str) -> String {
    format!("{TYPED_FANOUT}{extra}")
}

#[test]
fn typed_fan_outs_that_fit_their_types() {
    let ok = [
        "    parallel: {for_each: list.files}\n",
        "    parallel: {count: list.count}\n",
    ];
    for parallel in ok {
        let yaml = typed_fanout(&format!(
            "  - name: each\n    file: each.sh\n    depends_on: [list]\n{parallel}"
        ));
        assert!(
            parse(&yaml).is_ok(),
            "{parallel}: {}",
            parse(&yaml).unwrap_err()
        );
    }
    // Open objects and undeclared field types are left to the run-time check.
    let yaml = typed_fanout(
        "  - name: each\n    file: each.sh\n    depends_on: [open, list]\n    parallel: {for_each: open.anything}\n  - name: more\n    file: m.sh\n    depends_on: [list]\n    parallel: {for_each: list.meta.items}\n",
    );
    assert!(parse(&yaml).is_ok(), "{}", parse(&yaml).unwrap_err());
}

#[test]
fn typed_fan_outs_that_contradict_their_types() {
    check(
        &typed_fanout(
            "  - name: a
    file: a.sh
    depends_on: [list]
    parallel: {for_each: list.count}
  - name: b
    file: b.sh
    depends_on: [list]
    parallel: {count: list.files}
  - name: c
    file: c.sh
    depends_on: [list]
    parallel: {for_each: list.file}
  - name: d
    file: d.sh
    depends_on: [list]
    parallel: {for_each: list.label.parts}
  - name: e
    file: e.sh
    depends_on: [open]
    parallel: {count: open.path}
",
        ),
        expect![[r#"
            etl.yaml:23:15: task `a`, field `parallel`: `list.count` is declared as integer by type `alias` (the `output_type` of task `list`); `for_each` needs an array field
            etl.yaml:27:15: task `b`, field `parallel`: `list.files` is declared as array by type `alias` (the `output_type` of task `list`); `count` needs an integer field
            etl.yaml:31:15: task `c`, field `parallel`: `list.file` is not a field of type `alias` (the `output_type` of task `list`), which has `additionalProperties: false` (did you mean `files`?)
            etl.yaml:35:15: task `d`, field `parallel`: `list.label.parts` reads a field of `list.label`, which type `alias` (the `output_type` of task `list`) declares as string, not an object
            etl.yaml:39:15: task `e`, field `parallel`: `open.path` is declared as string by type `file_info` (the `output_type` of task `open`); `count` needs an integer field"#]],
    );
}

fn parse_from(yaml: &str, base_dir: Option<&str>) -> Result<WorkflowDefinition, ValidationErrors> {
    parse_workflow(
        yaml,
        &ParseOptions {
            source: "w.yaml",
            files: None,
            base_dir,
            ..Default::default()
        },
    )
}

#[test]
fn command_tasks_need_no_file_and_python_defaults_merge_into_py_tasks() {
    let yaml = "name: wf\ndefaults:\n  python: .venv/bin/python\ntasks:\n  - name: hello\n    command: [bash, -c, echo hi]\n  - name: node\n    file: build.js\n    command: [node]\n  - name: py\n    file: job.py\n  - name: own\n    file: tool.py\n    python: /opt/py/bin/python3\n  - name: sh\n    file: run.sh\n";
    let def = parse_from(yaml, Some("/home/me/flows")).expect("valid");
    let task = |name: &str| def.task(name).expect("task").clone();
    assert_eq!(
        task("hello").command,
        Some(vec![
            "bash".to_owned(),
            "-c".to_owned(),
            "echo hi".to_owned()
        ])
    );
    assert_eq!(task("hello").file, None);
    assert_eq!(task("node").command, Some(vec!["node".to_owned()]));
    assert_eq!(
        task("node").python,
        None,
        "a command task takes no default python"
    );
    assert_eq!(
        task("py").python.as_deref(),
        Some("/home/me/flows/.venv/bin/python"),
        "the default, resolved against the workflow's folder"
    );
    assert_eq!(task("own").python.as_deref(), Some("/opt/py/bin/python3"));
    assert_eq!(task("sh").python, None, "python applies to .py files only");
    assert_eq!(def.defaults["python"], json!(".venv/bin/python"));
    assert_eq!(def.base_dir.as_deref(), Some("/home/me/flows"));

    // Bare names and absolute paths stay as written: no base dir needed.
    let plain = parse_from(
        "name: wf\ndefaults: {python: python3.12}\ntasks:\n  - name: py\n    file: a.py\n  - name: c\n    command: [/usr/bin/env, true]\n",
        None,
    )
    .expect("valid");
    assert_eq!(plain.tasks[0].python.as_deref(), Some("python3.12"));
    assert_eq!(plain.base_dir, None);
    let relative = parse_from(
        "name: wf\ntasks:\n  - name: c\n    command: [./tools/run.sh, x]\n",
        Some("/srv/wf/"),
    )
    .expect("valid");
    assert_eq!(
        relative.tasks[0].command.as_deref(),
        Some(&["/srv/wf/tools/run.sh".to_owned(), "x".to_owned()][..])
    );
}

#[test]
fn command_and_python_mistakes_are_explained() {
    let check_in = |yaml: &str, base: Option<&str>, expected: Expect| match parse_from(yaml, base) {
        Ok(def) => panic!("expected errors, parsed {def:#?}"),
        Err(errors) => expected.assert_eq(&errors.to_string()),
    };
    check_in(
        "name: wf\ntasks:\n  - name: a\n    command: echo hi\n  - name: b\n    command: []\n  - name: c\n    command: [\"\", x]\n  - name: d\n    file: d.sh\n    python: python3\n  - name: e\n    command: [node]\n    file: e.py\n    python: python3\n  - name: f\n    executor: workers\n    handler: f\n    command: [x]\n  - name: g\n    python: .venv/bin/python\n",
        None,
        expect![[r#"
            w.yaml:4:14: task `a`, field `command`: expected a list of strings: the program and its arguments, e.g. ["bash", "-c", "echo hi"], found the string `echo hi`; `command` is not run by a shell, so write each argument separately, e.g. ["bash", "-c", "echo hi"]
            w.yaml:6:14: task `b`, field `command`: the list is empty; expected a list of strings: the program and its arguments, e.g. ["bash", "-c", "echo hi"]
            w.yaml:8:15: task `c`, field `command`: the program (the first element) is empty
            w.yaml:11:13: task `d`, field `python`: `python` is the interpreter of `.py` files and `d.sh` is not one; use `command` to choose the program that runs it
            w.yaml:15:13: task `e`, field `python`: `command` already names the program to run, so `python` would be ignored; remove one of them
            w.yaml:19:14: task `f`, field `command`: a `workers` task is run by the pool worker's `handler`, not by a program on ork's side; remove `command`
            w.yaml:20:5: task `g`, field `file`: a subprocess task needs `file` (a script relative to the workflow file) or `command` (a program and its arguments, e.g. ["bash", "-c", "echo hi"])
            w.yaml:21:13: task `g`, field `python`: `python` is the interpreter of a `.py` `file`, and this task has none; use `command` to run a program
            w.yaml:21:13: task `g`, field `python`: `.venv/bin/python` is relative to the workflow file, but this deploy did not say where that file is; deploy with `ork workflow deploy FILE` (which sends its folder as `base_dir`), or write an absolute path"#]],
    );
    check_in(
        "name: wf\ndefaults:\n  pyhton: x\n  python: 3\ntasks:\n  - name: a\n    file: a.py\n    python: ~/venv/bin/python\n",
        Some("/w"),
        expect![[r#"
            w.yaml:3:3: field `defaults.pyhton`: unknown field (did you mean `python`?)
            w.yaml:4:11: field `defaults.python`: expected text, found the number `3`
            w.yaml:8:13: task `a`, field `python`: `~/venv/bin/python`: `~` is not expanded; write the absolute path, or a path relative to the workflow file"#]],
    );
}

#[test]
fn inputs_are_declared_with_types_and_defaults() {
    let def = parse_from(
        "name: wf\ntypes:\n  day: {type: string, minLength: 10}\ninputs:\n  date: {$ref: '#/types/day', default: \"2026-11-26\", description: The day to load}\n  n: {type: integer}\ntasks:\n  - name: a\n    command: [\"true\"]\n    input: {d: \"{{ run.input.date }}\", s: \"{{ run.input.scheduled_for }}\"}\n",
        None,
    )
    .expect("valid");
    let inputs = def.inputs.as_ref().expect("inputs");
    assert_eq!(inputs.len(), 2);
    assert_eq!(inputs[0].name, "date");
    assert_eq!(inputs[0].schema, json!({"$ref": "#/types/day"}));
    assert_eq!(inputs[0].default, Some(json!("2026-11-26")));
    assert_eq!(inputs[0].description.as_deref(), Some("The day to load"));
    assert!(!inputs[0].required);
    assert!(inputs[1].required);

    check(
        "name: wf\nschedule: \"0 2 * * *\"\ninputs:\n  date: {type: strin}\n  n: {type: integer, default: x}\n  1x: {type: string, default: a}\ntasks:\n  - name: a\n    command: [\"true\"]\n    input: {d: \"{{ run.input.dat }}\"}\n",
        expect![[r#"
            etl.yaml:4:10: field `inputs.date`: unknown type `strin` (did you mean `string`?); use object, array, string, integer, number, boolean or null
            etl.yaml:4:3: field `inputs.date`: scheduled runs get no input but `scheduled_for`, so every declared input needs a `default`; add one to `date`
            etl.yaml:5:31: field `inputs.n.default`: the default does not match the input's type: expected integer, found string "x"
            etl.yaml:6:3: field `inputs.1x`: `1x` is not an input name; use letters, digits, `_` and `-`, starting with a letter
            etl.yaml:10:16: task `a`, field `input`: template `{{ run.input.dat }}` reads run input `dat`, which `inputs` does not declare (did you mean `date`?); declare it under `inputs`"#]],
    );
}

#[test]
fn container_tasks_take_image_command_resources_and_defaults() {
    let def = parse(
        "name: wf\n\
         defaults:\n  executor: docker\n  image: ork-test/busybox:1\n  resources: {cpu: 500m, memory: 64Mi}\n\
         tasks:\n\
         \x20 - name: a\n    command: [sh, -c, 'echo hi']\n    resources: {memory: 1Gi}\n\
         \x20 - name: b\n    executor: kubernetes\n    image: python:3.12-slim\n    file: b.py\n    command: [python3, -u]\n    image_pull_policy: never\n\
         \x20 - name: c\n    executor: subprocess\n    file: c.sh\n",
    )
    .unwrap();
    let a = &def.tasks[0];
    assert_eq!(a.executor, "docker");
    assert_eq!(a.image.as_deref(), Some("ork-test/busybox:1"));
    assert_eq!(
        a.command.as_deref(),
        Some(&["sh".to_owned(), "-c".to_owned(), "echo hi".to_owned()][..])
    );
    assert_eq!(
        a.resources.cpu.as_deref(),
        Some("500m"),
        "from the defaults"
    );
    assert_eq!(
        a.resources.memory.as_deref(),
        Some("1Gi"),
        "the task's own wins"
    );
    assert_eq!(a.image_pull_policy, ImagePullPolicy::IfNotPresent);
    let b = &def.tasks[1];
    assert_eq!(b.executor, "kubernetes");
    assert_eq!(b.image.as_deref(), Some("python:3.12-slim"));
    assert_eq!(b.image_pull_policy, ImagePullPolicy::Never);
    let c = &def.tasks[2];
    assert_eq!(c.executor, "subprocess");
    assert_eq!(
        c.image, None,
        "the default image is only for container tasks"
    );
    assert_eq!(def.defaults["image"], json!("ork-test/busybox:1"));
}

#[test]
fn container_task_errors_name_the_field() {
    check(
        "name: wf\ntasks:\n  - name: a\n    executor: docker\n    command: [true]\n",
        expect![
            "etl.yaml:4:15: task `a`, field `image`: a `docker` task needs `image`: the container image it runs in, e.g. `image: python:3.12-slim` (or set `defaults: {image: ...}`)"
        ],
    );
    check(
        "name: wf\ntasks:\n  - name: a\n    executor: kubernetes\n    image: alpine\n",
        expect![
            r#"etl.yaml:4:15: task `a`, field `file`: a kubernetes task needs `file` (a script relative to the workflow file) or `command` (a program and its arguments, e.g. ["bash", "-c", "echo hi"])"#
        ],
    );
    check(
        &task_with(
            "    image: alpine\n    image_pull_policy: sometimes\n    resources: {cpu: lots, memory: 12MB}\n    command: []\n",
        ),
        expect![[r#"
            etl.yaml:5:12: task `a`, field `image`: `image` is for container tasks; add `executor:` one of docker, kubernetes, fargate, cloudrun, containerapp, or remove it (this task's executor is `subprocess`)
            etl.yaml:6:24: task `a`, field `image_pull_policy`: unknown policy `sometimes`; use `if_not_present` (the default), `always` or `never`
            etl.yaml:6:24: task `a`, field `image_pull_policy`: `image_pull_policy` is for container tasks (`executor: docker` or `kubernetes`); remove it
            etl.yaml:7:22: task `a`, field `resources.cpu`: `lots` is not a quantity; write a number with an optional suffix, such as "500m" or "2" for CPU and "256Mi" or "1G" for memory
            etl.yaml:7:36: task `a`, field `resources.memory`: `12MB` is not a quantity; write a number with an optional suffix, such as "500m" or "2" for CPU and "256Mi" or "1G" for memory
            etl.yaml:8:14: task `a`, field `command`: the list is empty; expected a list of strings: the program and its arguments, e.g. ["bash", "-c", "echo hi"]"#]],
    );
    check(
        "name: wf\ntasks:\n  - name: a\n    executor: fargate\n    image: alpine\n    image_pull_policy: never\n    command: [true]\n",
        expect![
            "etl.yaml:6:24: task `a`, field `image_pull_policy`: `fargate` always pulls the image from its registry; remove `image_pull_policy` (it is for `docker` and `kubernetes` tasks)"
        ],
    );
    check(
        "name: wf\ntasks:\n  - name: a\n    executor: cloudrun\n    command: [true]\n",
        expect![
            "etl.yaml:4:15: task `a`, field `image`: a `cloudrun` task needs `image`: the container image it runs in, e.g. `image: python:3.12-slim` (or set `defaults: {image: ...}`)"
        ],
    );
    check(
        "name: wf\ndefaults:\n  executor: lambda\n  image: 'a b'\n  resources: {memory: -1Gi}\n  pyton: x\ntasks:\n  - name: a\n    file: a.sh\n",
        expect![[r#"
            etl.yaml:3:13: field `defaults.executor`: unknown executor `lambda`; known executors: subprocess, workers, docker, kubernetes, fargate, cloudrun, containerapp
            etl.yaml:4:10: field `defaults.image`: `a b` is not an image reference: it contains spaces; write e.g. `registry.example.com/team/app:1.2`
            etl.yaml:5:23: field `defaults.resources.memory`: `-1Gi` is negative; a resource amount must be positive
            etl.yaml:6:3: field `defaults.pyton`: unknown field (did you mean `python`?)"#]],
    );
}

// ---- on: events and webhooks ----

#[test]
fn parses_event_subscriptions_and_webhooks() {
    let def = parse(
        "name: wf\non:\n  event: order.created\n  filter: {region: eu, customer.tier: gold}\n  webhook: {secret: github-hook}\ntasks: [{name: a, file: a.sh}]\n",
    )
    .expect("valid");
    assert_eq!(def.on.event.as_deref(), Some("order.created"));
    assert_eq!(def.on.filter["customer.tier"], json!("gold"));
    assert_eq!(def.on.webhook_secret.as_deref(), Some("github-hook"));
}

#[test]
fn invalid_on_blocks_name_the_field() {
    check(
        "name: wf\non:\n  event: \"bad name\"\n  webhook: {secret: ../x}\n  evnt: x\ntasks: [{name: a, file: a.sh}]\n",
        expect![[r#"
            etl.yaml:3:10: field `on.event`: `bad name` is not a valid event name; use 1 to 128 letters, digits, `.`, `_`, `-` and `/`, starting with a letter or digit (e.g. `order.created`)
            etl.yaml:4:12: field `on.webhook`: `../x` is not a valid secret name; use 1 to 128 letters, digits, `_`, `-` and `.`, not starting with `.`
            etl.yaml:5:3: field `on.evnt`: unknown field (did you mean `event`?)"#]],
    );
    check(
        "name: wf\non:\n  filter: {a: 1}\n  webhook: hunter2\ntasks: [{name: a, file: a.sh}]\n",
        expect![[r#"
            etl.yaml:3:11: field `on.filter`: a filter needs `event:`: it selects among the events of that name
            etl.yaml:4:12: field `on.webhook`: expected `{secret: NAME}` (a secret's name, never its value), found the string `hunter2`"#]],
    );
}
