//! Typed outputs: the JSON-Schema subset that `types` declares and
//! `output_type` names, checked once at deploy ([`check_types`]) and against
//! every output of a typed task ([`validate`], [`validate_output`]).
//!
//! # Supported keywords
//!
//! - `type`: `object`, `array`, `string`, `integer`, `number`, `boolean`,
//!   `null`, or a list of them. `integer` means a number written without a
//!   decimal point (`3`, not `3.0`), as `parallel: {count: ...}` needs.
//! - objects: `properties`, `required`, `additionalProperties` (`false`, or a
//!   schema for the properties not listed; extra properties are allowed when
//!   it is absent);
//! - arrays: `items` (one schema for every item), `minItems`, `maxItems`;
//! - strings: `minLength`, `maxLength` (in characters);
//! - numbers: `minimum`, `maximum` (inclusive);
//! - any value: `enum`, `const`;
//! - `$ref: "#/types/NAME"`: the value must also match the declared type
//!   `NAME`. A bare name (`items: file_info`) is not a reference: every
//!   schema is a mapping, so write `items: {$ref: "#/types/file_info"}`.
//!   Types may refer to themselves through `properties` or `items`.
//! - annotations, accepted and ignored: `title`, `description`, `default`,
//!   `examples`, `$comment`.
//!
//! Any other keyword is refused at deploy (`pattern`, `format`, `oneOf`, ...
//! as unsupported, anything else as unknown) rather than silently ignored,
//! so that a type never promises more than ork checks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Value};

use crate::model::{TaskDefinition, TypeSchema, WorkflowDefinition};
use crate::suggest;

/// How a `$ref` names a declared type: `#/types/NAME`.
pub const REF_PREFIX: &str = "#/types/";
/// Deepest schema nesting followed while validating, counting each `$ref`;
/// stops runaway recursion through self-referring types.
pub const MAX_TYPE_DEPTH: usize = 64;
/// Most violations one validation reports; the rest are not looked for.
pub const MAX_VIOLATIONS: usize = 100;
/// Violations [`validate_output`] lists in its message.
pub const OUTPUT_VIOLATIONS_SHOWN: usize = 5;

/// The keywords ork checks, in the order error messages list them.
pub const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "$ref",
];
/// Keywords accepted as documentation and otherwise ignored.
pub const ANNOTATIONS: &[&str] = &["title", "description", "default", "examples", "$comment"];
/// The values `type` may take.
pub const TYPE_NAMES: &[&str] = &[
    "object", "array", "string", "integer", "number", "boolean", "null",
];
/// JSON Schema keywords ork knows of but does not check; refused at deploy.
const UNSUPPORTED: &[&str] = &[
    "pattern",
    "format",
    "patternProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "minProperties",
    "maxProperties",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "uniqueItems",
    "prefixItems",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
    "unevaluatedProperties",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$defs",
    "definitions",
    "$id",
    "$schema",
    "$anchor",
    "$dynamicRef",
    "contentEncoding",
    "contentMediaType",
];

/// One way a value does not match its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeViolation {
    /// JSON pointer to the offending value, e.g. `/files/2`; empty for the
    /// whole value.
    pub path: String,
    pub message: String,
}

impl fmt::Display for TypeViolation {
    /// `at /files/2: expected string, found number 3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "at the top level: {}", self.message)
        } else {
            write!(f, "at {}: {}", self.path, self.message)
        }
    }
}

/// Checks `value` against the declared type `type_name`, returning every
/// violation (up to [`MAX_VIOLATIONS`]) in document order.
pub fn validate(
    value: &Value,
    type_name: &str,
    types: &BTreeMap<String, TypeSchema>,
) -> Result<(), Vec<TypeViolation>> {
    let Some(schema) = types.get(type_name) else {
        return Err(vec![TypeViolation {
            path: String::new(),
            message: format!("type `{type_name}` is not declared under `types`"),
        }]);
    };
    let mut v = Validator {
        types,
        out: Vec::new(),
        path: String::new(),
    };
    v.check(schema, value, 0);
    if v.out.is_empty() { Ok(()) } else { Err(v.out) }
}

/// Checks `value` against a schema written in place (an input field's
/// type, say) rather than a declared type; `$ref`s in it resolve to `types`.
pub fn validate_schema(
    value: &Value,
    schema: &Value,
    types: &BTreeMap<String, TypeSchema>,
) -> Result<(), Vec<TypeViolation>> {
    let mut v = Validator {
        types,
        out: Vec::new(),
        path: String::new(),
    };
    v.check(schema, value, 0);
    if v.out.is_empty() { Ok(()) } else { Err(v.out) }
}

/// Checks the output of an attempt of `task` against its `output_type`:
/// `Ok` when the task has none. The error is the message the attempt fails
/// with, listing up to [`OUTPUT_VIOLATIONS_SHOWN`] violations.
pub fn validate_output(
    task: &TaskDefinition,
    def: &WorkflowDefinition,
    output: &Value,
) -> Result<(), String> {
    let Some(name) = task.output_type.as_deref() else {
        return Ok(());
    };
    if !def.types.contains_key(name) {
        return Err(format!(
            "task `{}` has `output_type: {name}`, but the workflow declares no type `{name}`",
            task.name
        ));
    }
    validate(output, name, &def.types).map_err(|violations| {
        let shown: Vec<String> = violations
            .iter()
            .take(OUTPUT_VIOLATIONS_SHOWN)
            .map(ToString::to_string)
            .collect();
        let rest = violations.len() - shown.len();
        let more = match rest {
            0 => String::new(),
            _ if violations.len() >= MAX_VIOLATIONS => format!("; and at least {rest} more"),
            _ => format!("; and {rest} more"),
        };
        format!(
            "output does not match type `{name}` (task `{}`, field `output_type`): {}{more}",
            task.name,
            shown.join("; ")
        )
    })
}

struct Validator<'a> {
    types: &'a BTreeMap<String, TypeSchema>,
    out: Vec<TypeViolation>,
    /// JSON pointer of the value being checked.
    path: String,
}

impl Validator<'_> {
    fn fail(&mut self, message: String) {
        if self.out.len() < MAX_VIOLATIONS {
            self.out.push(TypeViolation {
                path: self.path.clone(),
                message,
            });
        }
    }

    /// Checks `value` at `self.path` against `schema`.
    fn check(&mut self, schema: &Value, value: &Value, depth: usize) {
        if self.out.len() >= MAX_VIOLATIONS {
            return;
        }
        if depth > MAX_TYPE_DEPTH {
            self.fail(format!(
                "types nest deeper than {MAX_TYPE_DEPTH} levels here; is there a `$ref` cycle?"
            ));
            return;
        }
        // Deploy refuses schemas that are not mappings; accept rather than
        // guess if one got through.
        let Some(schema) = schema.as_object() else {
            return;
        };
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            match ref_target(reference).and_then(|name| self.types.get(name)) {
                Some(target) => self.check(target, value, depth + 1),
                None => self.fail(format!(
                    "`$ref: {reference}` names no declared type; write `{REF_PREFIX}NAME`"
                )),
            }
        }
        if let Some(expected) = schema.get("type") {
            let names = type_names(expected);
            if !names.iter().any(|t| has_type(value, t)) {
                self.fail(format!(
                    "expected {}, found {}",
                    either(&names),
                    describe(value)
                ));
                // Other keywords assume the type; they would only repeat it.
                return;
            }
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array)
            && !options.contains(value)
        {
            let list: Vec<String> = options.iter().map(|o| preview(o, 30)).collect();
            self.fail(format!(
                "expected one of {}, found {}",
                list.join(", "),
                describe(value)
            ));
        }
        if let Some(c) = schema.get("const")
            && c != value
        {
            self.fail(format!(
                "expected {}, found {}",
                preview(c, 40),
                describe(value)
            ));
        }
        match value {
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(f64::NAN);
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
                    && n < min
                {
                    self.fail(format!(
                        "expected at least {}, found {}",
                        schema["minimum"],
                        describe(value)
                    ));
                }
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
                    && n > max
                {
                    self.fail(format!(
                        "expected at most {}, found {}",
                        schema["maximum"],
                        describe(value)
                    ));
                }
            }
            Value::String(s) => {
                let len = s.chars().count() as u64;
                if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
                    && len < min
                {
                    self.fail(format!(
                        "expected at least {min} {}, found {}",
                        plural(min, "character"),
                        describe(value)
                    ));
                }
                if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
                    && len > max
                {
                    self.fail(format!(
                        "expected at most {max} {}, found a string of {len}",
                        plural(max, "character")
                    ));
                }
            }
            Value::Array(items) => self.check_array(schema, items, depth),
            Value::Object(object) => self.check_object(schema, object, depth),
            Value::Null | Value::Bool(_) => {}
        }
    }

    fn check_array(&mut self, schema: &Map<String, Value>, items: &[Value], depth: usize) {
        let len = items.len() as u64;
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
            && len < min
        {
            self.fail(format!(
                "expected at least {min} {}, found {len}",
                plural(min, "item")
            ));
        }
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && len > max
        {
            self.fail(format!(
                "expected at most {max} {}, found {len}",
                plural(max, "item")
            ));
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                if self.out.len() >= MAX_VIOLATIONS {
                    break;
                }
                let len = self.path.len();
                self.path.push('/');
                self.path.push_str(&i.to_string());
                self.check(item_schema, item, depth + 1);
                self.path.truncate(len);
            }
        }
    }

    fn check_object(
        &mut self,
        schema: &Map<String, Value>,
        object: &Map<String, Value>,
        depth: usize,
    ) {
        let empty = Map::new();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(required) {
                self.fail(format!("missing required property `{required}`"));
            }
        }
        let additional = schema.get("additionalProperties");
        for (key, v) in object {
            if self.out.len() >= MAX_VIOLATIONS {
                break;
            }
            let len = self.path.len();
            self.path.push('/');
            self.path.push_str(&escape_pointer(key));
            match (properties.get(key), additional) {
                (Some(s), _) => self.check(s, v, depth + 1),
                (None, Some(Value::Bool(false))) => {
                    let known: Vec<&str> = properties.keys().map(String::as_str).collect();
                    let hint = match suggest::closest(key, known.iter().copied()) {
                        Some(close) => format!(" (did you mean `{close}`?)"),
                        None if known.is_empty() => "; the type allows no properties".to_owned(),
                        None => format!("; the type allows only {}", known.join(", ")),
                    };
                    self.fail(format!("unexpected property `{key}`{hint}"));
                }
                (None, Some(s @ Value::Object(_))) => self.check(s, v, depth + 1),
                (None, _) => {}
            }
            self.path.truncate(len);
        }
    }
}

/// The type name a `$ref` value points at, if it has the `#/types/` form.
pub fn ref_target(reference: &str) -> Option<&str> {
    reference
        .strip_prefix(REF_PREFIX)
        .filter(|name| !name.is_empty())
}

fn type_names(expected: &Value) -> Vec<&str> {
    match expected {
        Value::String(s) => vec![s.as_str()],
        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}

/// `string`, `string or null`, `string, integer or null`.
fn either(names: &[&str]) -> String {
    match names {
        [] => "nothing".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// `number 3`, `string "x"`, `array of 2 items`: what a value is.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => format!("string {}", preview(value, 40)),
        Value::Array(items) => {
            format!(
                "array of {} {}",
                items.len(),
                plural(items.len() as u64, "item")
            )
        }
        Value::Object(_) => "object".to_owned(),
    }
}

/// The value as JSON, cut to about `max` characters.
fn preview(value: &Value, max: usize) -> String {
    let text = value.to_string();
    match text.char_indices().nth(max) {
        None => text,
        Some((at, _)) => format!("{}...", &text[..at]),
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The key a JSON-pointer segment names.
pub(crate) fn unescape_pointer(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

// ---- deploy-time checks of the declarations themselves ----

/// A problem in a type declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeDefError {
    pub type_name: String,
    /// JSON pointer, inside the type, of the schema with the problem; empty
    /// for the type itself.
    pub path: String,
    /// The keyword at fault, when there is one.
    pub keyword: Option<String>,
    pub message: String,
}

impl fmt::Display for TypeDefError {
    /// ``type `report` at /properties/name: unsupported keyword `pattern`...``.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type `{}`", self.type_name)?;
        if !self.path.is_empty() {
            write!(f, " at {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Checks the declared types: known keywords with well-formed values,
/// references to declared types, no reference cycles that consume nothing.
/// Errors come per type in name order, each type's in key order.
pub fn check_types(types: &BTreeMap<String, TypeSchema>) -> Vec<TypeDefError> {
    let mut errors = Vec::new();
    for (name, schema) in types {
        let mut checker = DefChecker {
            types,
            type_name: name,
            errors: &mut errors,
        };
        checker.schema(schema, "", 0);
        if let Some(cycle) = ref_cycle(types, name) {
            errors.push(TypeDefError {
                type_name: name.clone(),
                path: String::new(),
                keyword: Some("$ref".to_owned()),
                message: format!(
                    "`$ref` cycle {}: these types only refer to each other, so no value can match; \
                     refer to a type inside `properties` or `items` instead",
                    cycle.join(" -> ")
                ),
            });
        }
    }
    errors
}

/// Checks one schema written in place (an input field's type): the same
/// rules as a declared type's, with `$ref`s naming `types`. Errors carry
/// `label` as their `type_name`.
pub fn check_schema(
    label: &str,
    schema: &Value,
    types: &BTreeMap<String, TypeSchema>,
) -> Vec<TypeDefError> {
    let mut errors = Vec::new();
    let mut checker = DefChecker {
        types,
        type_name: label,
        errors: &mut errors,
    };
    checker.schema(schema, "", 0);
    errors
}

/// The chain of top-level `$ref`s from `start` when it comes back to itself.
fn ref_cycle(types: &BTreeMap<String, TypeSchema>, start: &str) -> Option<Vec<String>> {
    let mut chain = vec![start.to_owned()];
    let mut seen = BTreeSet::from([start]);
    let mut current = types.get(start)?;
    while let Some(next) = current
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(ref_target)
    {
        chain.push(next.to_owned());
        if next == start {
            return Some(chain);
        }
        // A cycle that does not pass through `start` is reported for its own members.
        if !seen.insert(next) {
            return None;
        }
        current = types.get(next)?;
    }
    None
}

struct DefChecker<'a, 'e> {
    types: &'a BTreeMap<String, TypeSchema>,
    type_name: &'a str,
    errors: &'e mut Vec<TypeDefError>,
}

impl DefChecker<'_, '_> {
    fn push(&mut self, path: &str, keyword: Option<&str>, message: String) {
        self.errors.push(TypeDefError {
            type_name: self.type_name.to_owned(),
            path: path.to_owned(),
            keyword: keyword.map(str::to_owned),
            message,
        });
    }

    /// Checks the schema at `path`, which must be a mapping.
    fn schema(&mut self, schema: &Value, path: &str, depth: usize) {
        if depth > MAX_TYPE_DEPTH {
            self.push(
                path,
                None,
                format!("nests deeper than {MAX_TYPE_DEPTH} levels"),
            );
            return;
        }
        let Some(map) = schema.as_object() else {
            let message = match schema {
                Value::String(s) if self.types.contains_key(s) => format!(
                    "expected a schema mapping, found the string `{s}`; to use the declared type, \
                     write `{{$ref: \"{REF_PREFIX}{s}\"}}`"
                ),
                _ => format!(
                    "expected a schema mapping such as `{{type: string}}`, found {}",
                    describe(schema)
                ),
            };
            self.push(path, None, message);
            return;
        };
        for (keyword, value) in map {
            let child = |key: &str| format!("{path}/{keyword}/{}", escape_pointer(key));
            let kw = Some(keyword.as_str());
            match keyword.as_str() {
                "type" => {
                    let names: Vec<&Value> = match value {
                        Value::Array(list) if !list.is_empty() => list.iter().collect(),
                        Value::String(_) => vec![value],
                        _ => {
                            self.push(path, kw, format!(
                                "`type` must be a type name or a non-empty list of them, found {}",
                                describe(value)
                            ));
                            continue;
                        }
                    };
                    for name in names {
                        let known = name.as_str().is_some_and(|n| TYPE_NAMES.contains(&n));
                        if !known {
                            let close = name
                                .as_str()
                                .and_then(|n| suggest::closest(n, TYPE_NAMES.iter().copied()))
                                .map(|c| format!(" (did you mean `{c}`?)"))
                                .unwrap_or_default();
                            let shown = match name.as_str() {
                                Some(n) => format!("`{n}`"),
                                None => preview(name, 30),
                            };
                            self.push(
                                path,
                                kw,
                                format!("unknown type {shown}{close}; use {}", either(TYPE_NAMES)),
                            );
                        }
                    }
                }
                "properties" => match value.as_object() {
                    Some(props) => {
                        for (key, sub) in props {
                            self.schema(sub, &child(key), depth + 1);
                        }
                    }
                    None => self.push(
                        path,
                        kw,
                        format!(
                            "`properties` must map property names to schemas, found {}",
                            describe(value)
                        ),
                    ),
                },
                "required" => {
                    let ok = value
                        .as_array()
                        .is_some_and(|list| list.iter().all(Value::is_string));
                    if !ok {
                        self.push(
                            path,
                            kw,
                            format!(
                                "`required` must be a list of property names, found {}",
                                describe(value)
                            ),
                        );
                    }
                }
                "additionalProperties" => {
                    if !value.is_boolean() {
                        self.schema(value, &format!("{path}/{keyword}"), depth + 1);
                    }
                }
                "items" => {
                    if value.is_array() {
                        self.push(
                            path,
                            kw,
                            "a list of `items` schemas (tuples) is not supported; \
                                             give one schema that every item matches"
                                .to_owned(),
                        );
                    } else {
                        self.schema(value, &format!("{path}/{keyword}"), depth + 1);
                    }
                }
                "enum" => {
                    if value.as_array().is_none_or(Vec::is_empty) {
                        self.push(
                            path,
                            kw,
                            format!(
                                "`enum` must be a non-empty list of allowed values, found {}",
                                describe(value)
                            ),
                        );
                    }
                }
                "const" => {}
                "minimum" | "maximum" => {
                    if !value.is_number() {
                        self.push(
                            path,
                            kw,
                            format!("`{keyword}` must be a number, found {}", describe(value)),
                        );
                    }
                }
                "minLength" | "maxLength" | "minItems" | "maxItems" => {
                    if !value.is_u64() {
                        self.push(
                            path,
                            kw,
                            format!(
                                "`{keyword}` must be a whole number of at least 0, found {}",
                                describe(value)
                            ),
                        );
                    }
                }
                "$ref" => self.reference(value, path),
                k if ANNOTATIONS.contains(&k) => {}
                k if UNSUPPORTED.contains(&k) => self.push(
                    path,
                    kw,
                    format!(
                        "unsupported keyword `{k}`; ork checks only {}",
                        KEYWORDS.join(", ")
                    ),
                ),
                k => {
                    let known = KEYWORDS.iter().chain(ANNOTATIONS).copied();
                    let message = match suggest::closest(k, known) {
                        Some(close) => format!("unknown keyword `{k}` (did you mean `{close}`?)"),
                        None => format!(
                            "unknown keyword `{k}`; supported keywords: {}",
                            KEYWORDS.join(", ")
                        ),
                    };
                    self.push(path, kw, message);
                }
            }
        }
        self.bounds(map, path);
        if map.get("additionalProperties") == Some(&Value::Bool(false)) {
            let props = map.get("properties").and_then(Value::as_object);
            for required in map
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !props.is_some_and(|p| p.contains_key(required)) {
                    self.push(
                        path,
                        Some("required"),
                        format!(
                            "required property `{required}` is not in `properties`, and \
                         `additionalProperties: false` forbids it, so no value can match"
                        ),
                    );
                }
            }
        }
    }

    fn bounds(&mut self, map: &Map<String, Value>, path: &str) {
        for (low, high) in [
            ("minimum", "maximum"),
            ("minLength", "maxLength"),
            ("minItems", "maxItems"),
        ] {
            if let (Some(l), Some(h)) = (
                map.get(low).and_then(Value::as_f64),
                map.get(high).and_then(Value::as_f64),
            ) && l > h
            {
                self.push(
                    path,
                    Some(low),
                    format!(
                        "`{low}` ({}) is greater than `{high}` ({}), so no value can match",
                        map[low], map[high]
                    ),
                );
            }
        }
    }

    fn reference(&mut self, value: &Value, path: &str) {
        let kw = Some("$ref");
        let Some(reference) = value.as_str() else {
            self.push(
                path,
                kw,
                format!(
                    "`$ref` must be the text `{REF_PREFIX}NAME`, found {}",
                    describe(value)
                ),
            );
            return;
        };
        let Some(name) = ref_target(reference) else {
            self.push(path, kw, format!(
                "`$ref: {reference}` is not a reference ork understands; write `{REF_PREFIX}NAME`, \
                 naming a type declared under `types`"
            ));
            return;
        };
        if !self.types.contains_key(name) {
            let declared = self.types.keys().map(String::as_str);
            let close = suggest::closest(name, declared)
                .map(|c| format!(" (did you mean `{c}`?)"))
                .unwrap_or_default();
            let list: Vec<&str> = self.types.keys().map(String::as_str).collect();
            self.push(
                path,
                kw,
                format!(
                    "`$ref: {reference}` names undeclared type `{name}`{close}; declared types: {}",
                    list.join(", ")
                ),
            );
        }
    }
}

// ---- what a type says about a field, for deploy-time reference checks ----

/// What the declared types say about `task.field.sub` in an output.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldLookup<'a> {
    /// The field's schema (after following `$ref`s).
    Found(&'a Value),
    /// The types do not say (open object, missing schema, deep nesting).
    Unknown,
    /// A closed object (`additionalProperties: false`) lacks `key`; `at` is
    /// the path up to and including it, `allowed` the declared properties.
    Missing {
        at: String,
        key: String,
        allowed: Vec<String>,
    },
    /// `at` is declared with these types, none of them `object`, yet the
    /// reference reads a field of it.
    NotObject { at: String, declared: String },
}

/// Follows `path` through the declared type `type_name`.
pub(crate) fn field_lookup<'a>(
    types: &'a BTreeMap<String, TypeSchema>,
    type_name: &str,
    path: &[String],
) -> FieldLookup<'a> {
    let Some(mut schema) = types.get(type_name).and_then(|s| resolve(types, s)) else {
        return FieldLookup::Unknown;
    };
    for (i, key) in path.iter().enumerate() {
        if let Some(declared) = declared_types(schema)
            && !declared.contains(&"object")
        {
            return FieldLookup::NotObject {
                at: path[..i].join("."),
                declared: either(&declared),
            };
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let next = match (
            props.and_then(|p| p.get(key)),
            schema.get("additionalProperties"),
        ) {
            (Some(s), _) => s,
            (None, Some(Value::Bool(false))) => {
                return FieldLookup::Missing {
                    at: path[..=i].join("."),
                    key: key.clone(),
                    allowed: props
                        .map(|p| p.keys().cloned().collect())
                        .unwrap_or_default(),
                };
            }
            (None, Some(s @ Value::Object(_))) => s,
            (None, _) => return FieldLookup::Unknown,
        };
        match resolve(types, next) {
            Some(s) => schema = s,
            None => return FieldLookup::Unknown,
        }
    }
    FieldLookup::Found(schema)
}

/// The `type` list of a schema, when it declares one.
pub(crate) fn declared_types(schema: &Value) -> Option<Vec<&str>> {
    schema.get("type").map(type_names)
}

/// Follows `$ref` until a schema that declares its own `type` or has none.
fn resolve<'a>(
    types: &'a BTreeMap<String, TypeSchema>,
    mut schema: &'a Value,
) -> Option<&'a Value> {
    for _ in 0..MAX_TYPE_DEPTH {
        if schema.get("type").is_some() {
            return Some(schema);
        }
        match schema.get("$ref").and_then(Value::as_str) {
            Some(reference) => schema = types.get(ref_target(reference)?)?,
            None => return Some(schema),
        }
    }
    None
}

#[cfg(test)]
mod tests;
