use expect_test::{Expect, expect};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::parse::{ParseOptions, parse_workflow};

fn types(value: Value) -> BTreeMap<String, TypeSchema> {
    serde_json::from_value(value).unwrap()
}

/// A small set of types in the style workflows declare.
fn listing_types() -> BTreeMap<String, TypeSchema> {
    types(json!({
        "file_info": {
            "type": "object",
            "required": ["path", "size"],
            "additionalProperties": false,
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": 10},
                "size": {"type": "integer", "minimum": 0},
                "kind": {"enum": ["csv", "json"]},
                "checksum": {"type": ["string", "null"]},
            },
        },
        "listing": {
            "type": "object",
            "required": ["files"],
            "properties": {
                "files": {"type": "array", "items": {"$ref": "#/types/file_info"}, "maxItems": 3},
                "count": {"type": "integer"},
                "ratio": {"type": "number", "maximum": 1},
                "version": {"const": 2},
                "tags": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            },
            "additionalProperties": {"type": "string"},
        },
        "tree": {
            "type": "object",
            "properties": {"children": {"type": "array", "items": {"$ref": "#/types/tree"}}},
        },
    }))
}

fn violations(value: Value, type_name: &str) -> String {
    match validate(&value, type_name, &listing_types()) {
        Ok(()) => "ok".to_owned(),
        Err(list) => list.iter().map(|v| format!("{v}\n")).collect(),
    }
}

#[test]
fn valid_values_pass() {
    let ok = [
        (json!({"files": []}), "listing"),
        (
            json!({"files": [{"path": "a.csv", "size": 3, "kind": "csv", "checksum": null}], "count": 1, "ratio": 0.5, "version": 2, "tags": ["x"], "extra": "s"}),
            "listing",
        ),
        (
            json!({"path": "p", "size": 0, "checksum": "abc"}),
            "file_info",
        ),
        (json!({"children": [{"children": [{}]}]}), "tree"),
    ];
    for (value, name) in ok {
        assert_eq!(violations(value.clone(), name), "ok", "{value}");
    }
}

#[test]
fn violation_messages() {
    let cases: &[(Value, &str, Expect)] = &[
        (
            json!("x"),
            "listing",
            expect![[r#"
            at the top level: expected object, found string "x"
        "#]],
        ),
        (
            json!({}),
            "listing",
            expect![[r#"
            at the top level: missing required property `files`
        "#]],
        ),
        (
            json!({"files": [{"path": "a", "size": 1}, {"path": 3, "size": -1, "sise": 2}, "f"]}),
            "listing",
            expect![[r#"
                at /files/1/path: expected string, found number 3
                at /files/1/sise: unexpected property `sise` (did you mean `size`?)
                at /files/1/size: expected at least 0, found number -1
                at /files/2: expected object, found string "f"
            "#]],
        ),
        (
            json!({"files": [{}, {}, {}, {}], "count": 1.0, "ratio": 1.5, "version": 3, "tags": [], "extra": 1}),
            "listing",
            expect![[r#"
                at /count: expected integer, found number 1.0
                at /extra: expected string, found number 1
                at /files: expected at most 3 items, found 4
                at /files/0: missing required property `path`
                at /files/0: missing required property `size`
                at /files/1: missing required property `path`
                at /files/1: missing required property `size`
                at /files/2: missing required property `path`
                at /files/2: missing required property `size`
                at /files/3: missing required property `path`
                at /files/3: missing required property `size`
                at /ratio: expected at most 1, found number 1.5
                at /tags: expected at least 1 item, found 0
                at /version: expected 2, found number 3
            "#]],
        ),
        (
            json!({"path": "", "size": 1, "kind": "xml", "checksum": 5, "a/b~": true}),
            "file_info",
            expect![[r#"
                at /a~1b~0: unexpected property `a/b~`; the type allows only checksum, kind, path, size
                at /checksum: expected string or null, found number 5
                at /kind: expected one of "csv", "json", found string "xml"
                at /path: expected at least 1 character, found string ""
            "#]],
        ),
        (
            json!({"path": "a-very-long-path.csv", "size": 1}),
            "file_info",
            expect![[r#"
                at /path: expected at most 10 characters, found a string of 20
            "#]],
        ),
        (
            json!(null),
            "nope",
            expect![[r#"
            at the top level: type `nope` is not declared under `types`
        "#]],
        ),
    ];
    for (value, name, expected) in cases {
        expected.assert_eq(&violations(value.clone(), name));
    }
}

#[test]
fn recursion_is_bounded() {
    // A self-referring type follows the value as deep as it goes, up to the limit.
    let mut deep = json!({});
    for _ in 0..40 {
        deep = json!({"children": [deep]});
    }
    let result = validate(&deep, "tree", &listing_types());
    let errors = result.unwrap_err();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0]
            .message
            .starts_with("types nest deeper than 64 levels"),
        "{}",
        errors[0]
    );
    // A `$ref` cycle that consumes nothing stops too (deploy refuses it).
    let cyclic = types(json!({"a": {"$ref": "#/types/b"}, "b": {"$ref": "#/types/a"}}));
    assert_eq!(validate(&json!(1), "a", &cyclic).unwrap_err().len(), 1);
}

#[test]
fn violations_are_capped() {
    let many = Value::Array((0..1000).map(|i| json!(i)).collect());
    let t = types(json!({"names": {"type": "array", "items": {"type": "string"}}}));
    assert_eq!(
        validate(&many, "names", &t).unwrap_err().len(),
        MAX_VIOLATIONS
    );
}

fn workflow(types_yaml: &str, task_extra: &str) -> WorkflowDefinition {
    let yaml =
        format!("name: wf\ntypes:\n{types_yaml}tasks:\n  - name: t\n    file: t.sh\n{task_extra}");
    parse_workflow(&yaml, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn validate_output_messages() {
    let def = workflow(
        "  report:\n    type: object\n    properties:\n      total: {type: integer}\n    additionalProperties: false\n",
        "    output_type: report\n",
    );
    let task = &def.tasks[0];
    assert_eq!(validate_output(task, &def, &json!({"total": 3})), Ok(()));
    expect![[r#"output does not match type `report` (task `t`, field `output_type`): at /total: expected integer, found string "x""#]]
        .assert_eq(&validate_output(task, &def, &json!({"total": "x"})).unwrap_err());
    let extra: serde_json::Map<String, Value> =
        (0..8).map(|i| (format!("k{i}"), json!(i))).collect();
    expect!["output does not match type `report` (task `t`, field `output_type`): at /k0: unexpected property `k0`; the type allows only total; at /k1: unexpected property `k1`; the type allows only total; at /k2: unexpected property `k2`; the type allows only total; at /k3: unexpected property `k3`; the type allows only total; at /k4: unexpected property `k4`; the type allows only total; and 3 more"]
        .assert_eq(&validate_output(task, &def, &Value::Object(extra)).unwrap_err());
    let untyped = TaskDefinition {
        output_type: None,
        ..task.clone()
    };
    assert_eq!(validate_output(&untyped, &def, &json!("anything")), Ok(()));
    let dangling = TaskDefinition {
        output_type: Some("gone".into()),
        ..task.clone()
    };
    expect!["task `t` has `output_type: gone`, but the workflow declares no type `gone`"]
        .assert_eq(&validate_output(&dangling, &def, &json!(1)).unwrap_err());
}

#[test]
fn check_types_accepts_the_supported_subset() {
    let errors = check_types(&listing_types());
    assert_eq!(errors, []);
    let annotated = types(json!({"t": {
        "title": "T", "description": "d", "default": 1, "examples": [1], "$comment": "c",
        "type": "integer", "minimum": -1.5, "maximum": 10,
    }}));
    assert_eq!(check_types(&annotated), []);
}

#[test]
fn check_types_messages() {
    let t = types(json!({
        "file_info": {"type": "object"},
        "bad": {
            "type": ["strng", "array"],
            "proprties": {},
            "pattern": "^a",
            "minLength": -1,
            "minItems": 3,
            "maxItems": 2,
            "required": "a",
            "enum": [],
            "items": [{"type": "string"}],
            "additionalProperties": "file_info",
            "properties": {
                "a": {"$ref": "#/types/file_inf"},
                "b": {"$ref": "file_info"},
                "c": {"items": "file_info", "format": "uri"},
                "d": {"type": 3, "minimum": "0"},
            },
        },
        "closed": {"additionalProperties": false, "properties": {"a": {}}, "required": ["a", "b"]},
        "a": {"$ref": "#/types/b"},
        "b": {"$ref": "#/types/a"},
    }));
    let text: String = check_types(&t).iter().map(|e| format!("{e}\n")).collect();
    expect![[r##"
        type `a`: `$ref` cycle a -> b -> a: these types only refer to each other, so no value can match; refer to a type inside `properties` or `items` instead
        type `b`: `$ref` cycle b -> a -> b: these types only refer to each other, so no value can match; refer to a type inside `properties` or `items` instead
        type `bad` at /additionalProperties: expected a schema mapping, found the string `file_info`; to use the declared type, write `{$ref: "#/types/file_info"}`
        type `bad`: `enum` must be a non-empty list of allowed values, found array of 0 items
        type `bad`: a list of `items` schemas (tuples) is not supported; give one schema that every item matches
        type `bad`: `minLength` must be a whole number of at least 0, found number -1
        type `bad`: unsupported keyword `pattern`; ork checks only type, properties, required, additionalProperties, items, enum, const, minimum, maximum, minLength, maxLength, minItems, maxItems, $ref
        type `bad` at /properties/a: `$ref: #/types/file_inf` names undeclared type `file_inf` (did you mean `file_info`?); declared types: a, b, bad, closed, file_info
        type `bad` at /properties/b: `$ref: file_info` is not a reference ork understands; write `#/types/NAME`, naming a type declared under `types`
        type `bad` at /properties/c: unsupported keyword `format`; ork checks only type, properties, required, additionalProperties, items, enum, const, minimum, maximum, minLength, maxLength, minItems, maxItems, $ref
        type `bad` at /properties/c/items: expected a schema mapping, found the string `file_info`; to use the declared type, write `{$ref: "#/types/file_info"}`
        type `bad` at /properties/d: `minimum` must be a number, found string "0"
        type `bad` at /properties/d: `type` must be a type name or a non-empty list of them, found number 3
        type `bad`: unknown keyword `proprties` (did you mean `properties`?)
        type `bad`: `required` must be a list of property names, found string "a"
        type `bad`: unknown type `strng` (did you mean `string`?); use object, array, string, integer, number, boolean or null
        type `bad`: `minItems` (3) is greater than `maxItems` (2), so no value can match
        type `closed`: required property `b` is not in `properties`, and `additionalProperties: false` forbids it, so no value can match
    "##]].assert_eq(&text);
}

#[test]
fn field_lookup_follows_properties_and_refs() {
    let t = listing_types();
    let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let found_type = |name: &str, p: &[&str]| match field_lookup(&t, name, &path(p)) {
        FieldLookup::Found(s) => format!("{:?}", declared_types(s)),
        other => format!("{other:?}"),
    };
    assert_eq!(found_type("listing", &["files"]), r#"Some(["array"])"#);
    assert_eq!(found_type("listing", &["count"]), r#"Some(["integer"])"#);
    // Not listed, but `additionalProperties` gives a schema.
    assert_eq!(found_type("listing", &["other"]), r#"Some(["string"])"#);
    assert_eq!(
        found_type("listing", &["files", "x"]),
        r#"NotObject { at: "files", declared: "array" }"#
    );
    assert_eq!(
        found_type("file_info", &["sizes"]),
        r#"Missing { at: "sizes", key: "sizes", allowed: ["checksum", "kind", "path", "size"] }"#
    );
    assert_eq!(found_type("tree", &["leaves"]), "Unknown");
    assert_eq!(found_type("file_info", &["kind"]), "None");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any value against any one-keyword type: no panic, and `type` alone
    /// accepts exactly the values of that JSON type.
    #[test]
    fn validate_never_panics(value in arb_json(), name in prop::sample::select(TYPE_NAMES.to_vec())) {
        let t = types(json!({"t": {"type": name}, "any": {}}));
        prop_assert!(validate(&value, "any", &t).is_ok());
        prop_assert_eq!(validate(&value, "t", &t).is_ok(), has_type(&value, name));
        let schema = json!({"t": {"items": {"type": name}, "properties": {"a": {"type": name}}, "minimum": 0, "maxLength": 1}});
        let _ = validate(&value, "t", &types(schema));
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
