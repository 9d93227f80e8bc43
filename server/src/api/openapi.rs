//! The OpenAPI 3 document of the REST gateway, generated from the proto
//! descriptors (messages, fields, comments) and the gateway's route table, so
//! the API is never described by hand twice.
//!
//! The committed copy (`server/openapi.json`) is checked against this
//! generator by a test; `scripts/openapi.sh` rewrites it.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

use super::gateway::{FOLLOW_PARAM, ROUTES, Rpc};

/// Where the committed document lives, relative to the workspace root.
pub const COMMITTED_PATH: &str = "server/openapi.json";

/// Package prefix stripped from component names.
const PACKAGE: &str = ".ork.v1.";

struct MessageInfo<'a> {
    descriptor: &'a DescriptorProto,
    comment: Option<String>,
    field_comments: Vec<Option<String>>,
}

struct Index<'a> {
    messages: BTreeMap<String, MessageInfo<'a>>,
    enums: BTreeMap<String, Vec<String>>,
    /// `(service full name, method)` → (input type, output type, comment).
    methods: BTreeMap<(String, String), (String, String, Option<String>)>,
}

fn clean(comment: Option<&String>) -> Option<String> {
    let text = comment?
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

impl<'a> Index<'a> {
    fn new(set: &'a FileDescriptorSet) -> Self {
        let mut index = Index {
            messages: BTreeMap::new(),
            enums: BTreeMap::new(),
            methods: BTreeMap::new(),
        };
        for file in &set.file {
            let comments: BTreeMap<Vec<i32>, Option<String>> = file
                .source_code_info
                .iter()
                .flat_map(|info| &info.location)
                .map(|l| (l.path.clone(), clean(l.leading_comments.as_ref())))
                .collect();
            let comment = |path: &[i32]| comments.get(path).cloned().flatten();
            let prefix = format!(".{}", file.package());
            for (i, message) in file.message_type.iter().enumerate() {
                index.add_message(
                    &prefix,
                    message,
                    vec![4, i32::try_from(i).unwrap_or(0)],
                    &comment,
                );
            }
            for e in &file.enum_type {
                index.add_enum(&prefix, e);
            }
            for (s, service) in file.service.iter().enumerate() {
                for (m, method) in service.method.iter().enumerate() {
                    let path = [
                        6,
                        i32::try_from(s).unwrap_or(0),
                        2,
                        i32::try_from(m).unwrap_or(0),
                    ];
                    index.methods.insert(
                        (
                            format!("{}.{}", file.package(), service.name()),
                            method.name().to_owned(),
                        ),
                        (
                            method.input_type().to_owned(),
                            method.output_type().to_owned(),
                            comment(&path),
                        ),
                    );
                }
            }
        }
        index
    }

    fn add_message(
        &mut self,
        prefix: &str,
        message: &'a DescriptorProto,
        path: Vec<i32>,
        comment: &dyn Fn(&[i32]) -> Option<String>,
    ) {
        let name = format!("{prefix}.{}", message.name());
        for (i, nested) in message.nested_type.iter().enumerate() {
            let mut nested_path = path.clone();
            nested_path.extend([3, i32::try_from(i).unwrap_or(0)]);
            self.add_message(&name, nested, nested_path, comment);
        }
        for e in &message.enum_type {
            self.add_enum(&name, e);
        }
        let field_comments = (0..message.field.len())
            .map(|i| {
                let mut field_path = path.clone();
                field_path.extend([2, i32::try_from(i).unwrap_or(0)]);
                comment(&field_path)
            })
            .collect();
        self.messages.insert(
            name,
            MessageInfo {
                descriptor: message,
                comment: comment(&path),
                field_comments,
            },
        );
    }

    fn add_enum(&mut self, prefix: &str, e: &prost_types::EnumDescriptorProto) {
        self.enums.insert(
            format!("{prefix}.{}", e.name()),
            e.value.iter().map(|v| v.name().to_owned()).collect(),
        );
    }
}

/// The schema of a well-known type in the proto3 JSON mapping.
fn well_known(type_name: &str) -> Option<Value> {
    Some(match type_name {
        ".google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        ".google.protobuf.Duration" => {
            json!({ "type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$" })
        }
        ".google.protobuf.Value" => json!({ "description": "Any JSON value." }),
        ".google.protobuf.Struct" => json!({ "type": "object", "additionalProperties": true }),
        ".google.protobuf.ListValue" => json!({ "type": "array", "items": {} }),
        ".google.protobuf.Empty" => json!({ "type": "object", "additionalProperties": false }),
        _ => return None,
    })
}

struct Generator<'a> {
    index: Index<'a>,
    /// Messages referenced so far, emitted as components.
    wanted: BTreeSet<String>,
}

impl Generator<'_> {
    fn component_name(type_name: &str) -> String {
        type_name
            .strip_prefix(PACKAGE)
            .unwrap_or(type_name.trim_start_matches('.'))
            .replace('.', "_")
    }

    fn message_ref(&mut self, type_name: &str) -> Value {
        if let Some(schema) = well_known(type_name) {
            return schema;
        }
        self.wanted.insert(type_name.to_owned());
        json!({ "$ref": format!("#/components/schemas/{}", Self::component_name(type_name)) })
    }

    fn scalar(&mut self, field: &FieldDescriptorProto) -> Value {
        match field.r#type() {
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Type::Uint32 | Type::Fixed32 => {
                json!({ "type": "integer", "minimum": 0, "maximum": u32::MAX })
            }
            // The proto3 JSON mapping writes 64-bit integers as strings.
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
                json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" })
            }
            Type::Uint64 | Type::Fixed64 => {
                json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" })
            }
            Type::Bool => json!({ "type": "boolean" }),
            Type::String => json!({ "type": "string" }),
            Type::Bytes => json!({ "type": "string", "format": "byte" }),
            Type::Enum => {
                let values = self
                    .index
                    .enums
                    .get(field.type_name())
                    .cloned()
                    .unwrap_or_default();
                json!({ "type": "string", "enum": values })
            }
            Type::Message | Type::Group => self.message_ref(field.type_name()),
        }
    }

    fn field(&mut self, field: &FieldDescriptorProto, comment: Option<&String>) -> Value {
        let map_entry = (field.r#type() == Type::Message)
            .then(|| self.index.messages.get(field.type_name()))
            .flatten()
            .filter(|m| m.descriptor.options.as_ref().is_some_and(|o| o.map_entry()))
            .map(|m| m.descriptor.clone());
        let mut schema = if let Some(entry) = map_entry {
            let value = entry
                .field
                .iter()
                .find(|f| f.number() == 2)
                .cloned()
                .unwrap_or_default();
            json!({ "type": "object", "additionalProperties": self.scalar(&value) })
        } else if field.label() == Label::Repeated {
            json!({ "type": "array", "items": self.scalar(field) })
        } else {
            self.scalar(field)
        };
        if let (Some(text), Value::Object(map)) = (comment, &mut schema) {
            if map.contains_key("$ref") {
                // OpenAPI 3.0 ignores siblings of `$ref`; wrap to keep the text.
                schema = json!({ "allOf": [schema], "description": text });
            } else {
                map.insert("description".into(), json!(text));
            }
        }
        schema
    }

    /// The object schema of a message, without the fields in `skip`.
    fn object(&mut self, type_name: &str, skip: &[&str]) -> Value {
        let Some(info) = self.index.messages.get(type_name) else {
            return json!({ "type": "object" });
        };
        let descriptor = info.descriptor;
        let comment = info.comment.clone();
        let field_comments = info.field_comments.clone();
        let mut properties = Map::new();
        for (field, comment) in descriptor.field.iter().zip(&field_comments) {
            if skip.contains(&field.name()) {
                continue;
            }
            properties.insert(field.name().to_owned(), self.field(field, comment.as_ref()));
        }
        let mut schema =
            json!({ "type": "object", "properties": properties, "additionalProperties": false });
        if let Some(text) = comment {
            schema["description"] = json!(text);
        }
        schema
    }

    fn operations(&mut self) -> Map<String, Value> {
        let mut paths = Map::new();
        for route in ROUTES {
            let key = (
                route.rpc.service().to_owned(),
                route.rpc.method().to_owned(),
            );
            let Some((input, output, comment)) = self.index.methods.get(&key).cloned() else {
                continue;
            };
            let bound: Vec<&str> = route.path_fields.iter().map(|(_, f)| *f).collect();
            let mut parameters: Vec<Value> = route
                .path_fields
                .iter()
                .map(|(param, _)| json!({ "name": param, "in": "path", "required": true, "schema": { "type": "string" } }))
                .collect();
            let mut operation = json!({
                "operationId": route.rpc.method(),
                "tags": [route.rpc.service().trim_start_matches("ork.v1.")],
                "security": [{ "bearer": [] }],
                "responses": {
                    "200": { "description": "OK", "content": { "application/json": { "schema": self.message_ref(&output) } } },
                    "default": { "description": "An error", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } },
                },
            });
            if let Some(text) = comment {
                operation["description"] = json!(text);
            }
            if route.body {
                operation["requestBody"] = json!({
                    "required": false,
                    "content": { "application/json": { "schema": self.object(&input, &bound) } },
                });
            } else {
                let request = self.object(&input, &bound);
                for (name, schema) in request["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                {
                    let mut parameter =
                        json!({ "name": name, "in": "query", "required": false, "schema": schema });
                    if let Some(text) = schema.get("description") {
                        parameter["description"] = text.clone();
                    }
                    parameters.push(parameter);
                }
                if route.rpc == Rpc::GetTaskLogs {
                    parameters.push(json!({
                        "name": FOLLOW_PARAM,
                        "in": "query",
                        "required": false,
                        "description": "Stream the lines as Server-Sent Events (`lines` events carrying a FollowTaskLogsResponse, then `end`) until every selected task has finished.",
                        "schema": { "type": "boolean" },
                    }));
                    parameters.push(json!({
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": false,
                        "description": "With `follow`: the `id` of the last event received; the stream resumes after it (what a reconnecting EventSource sends). It takes precedence over `cursor`.",
                        "schema": { "type": "string", "pattern": "^[0-9]*$" },
                    }));
                    // OpenAPI 3.0: the schema describes one event.
                    operation["responses"]["200"]["content"]["text/event-stream"] = json!({ "schema": {
                        "type": "object",
                        "required": ["event", "id", "data"],
                        "properties": {
                            "event": { "type": "string", "enum": ["lines", "error", "end"] },
                            "id": {
                                "type": "string",
                                "description": "The log cursor after this event's lines; send it back as `Last-Event-ID` (or `cursor`) to resume.",
                            },
                            "data": {
                                "type": "string",
                                "description": "JSON: a FollowTaskLogsResponse for `lines`, an Error for `error`, `{}` for `end`.",
                            },
                        },
                    } });
                }
                if route.rpc == Rpc::WatchRun {
                    // Always a stream: the JSON content type does not apply.
                    operation["responses"]["200"]["content"] = json!({
                        "text/event-stream": event_stream("run", "a WatchRunResponse"),
                    });
                }
            }
            if !parameters.is_empty() {
                operation["parameters"] = Value::Array(parameters);
            }
            let entry = paths
                .entry(route.path.to_owned())
                .or_insert_with(|| json!({}));
            entry[route.method.as_str()] = operation;
        }
        paths.insert(
            "/healthz".into(),
            json!({ "get": {
                "operationId": "Healthz",
                "tags": ["Health"],
                "security": [],
                "description": "Answers while the server serves requests.",
                "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": {
                    "type": "object", "properties": { "status": { "type": "string" } }, "required": ["status"],
                } } } } },
            } }),
        );
        paths.insert(
            "/openapi.json".into(),
            json!({ "get": {
                "operationId": "OpenApi",
                "tags": ["Health"],
                "security": [],
                "description": "This document.",
                "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object" } } } } },
            } }),
        );
        paths
    }
}

/// The media type of a Server-Sent Events response whose messages are
/// `event` events carrying `what`. OpenAPI 3.0 cannot describe a stream, so
/// the schema describes one event.
fn event_stream(event: &str, what: &str) -> Value {
    json!({ "schema": {
        "type": "object",
        "required": ["event", "data"],
        "properties": {
            "event": { "type": "string", "enum": [event, "error", "end"] },
            "data": {
                "type": "string",
                "description": format!("JSON: {what} for `{event}`, an Error for `error`, `{{}}` for `end`."),
            },
        },
    } })
}

/// The OpenAPI document.
pub fn document() -> Value {
    let set = FileDescriptorSet::decode(ork_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    let mut generator = Generator {
        index: Index::new(&set),
        wanted: BTreeSet::new(),
    };
    let paths = generator.operations();
    let mut schemas = Map::new();
    let mut done = BTreeSet::new();
    while let Some(next) = generator
        .wanted
        .iter()
        .find(|m| !done.contains(*m))
        .cloned()
    {
        done.insert(next.clone());
        let schema = generator.object(&next, &[]);
        schemas.insert(Generator::component_name(&next), schema);
    }
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "description": "Every REST error. `code` is the gRPC status name (NOT_FOUND, INVALID_ARGUMENT, ...); `details` names the request field that was wrong, where there is one.",
            "required": ["code", "message", "details"],
            "properties": {
                "code": { "type": "string" },
                "message": { "type": "string" },
                "details": { "type": "array", "items": {
                    "type": "object",
                    "required": ["field", "description"],
                    "properties": { "field": { "type": "string" }, "description": { "type": "string" } },
                } },
            },
        }),
    );
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ork",
            "version": "v1",
            "description": "The REST gateway of ork: the same methods, messages and errors as the gRPC API (package ork.v1), in the proto3 JSON mapping with field names as written in the proto. Generated from the proto; do not edit.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": { "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API token (`ork token create`), sent as `Authorization: Bearer TOKEN`. A server started with `ork dev` on a loopback address needs none.",
            } },
        },
    })
}

/// The document as committed: pretty JSON with a final newline.
pub fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(COMMITTED_PATH)
    }

    #[test]
    fn committed_document_is_current() {
        let generated = document_text();
        if std::env::var_os("ORK_UPDATE_OPENAPI").is_some() {
            std::fs::write(committed_path(), &generated).expect("write openapi.json");
        }
        let committed = std::fs::read_to_string(committed_path()).unwrap_or_default();
        assert!(
            committed == generated,
            "{COMMITTED_PATH} differs from what the proto and the gateway routes generate; run `scripts/openapi.sh` and commit the result"
        );
    }

    #[test]
    fn every_route_is_documented_and_every_ref_resolves() {
        let doc = document();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str()];
            assert_eq!(
                op["operationId"],
                route.rpc.method(),
                "{route:?} has no operation: is the method in the proto?"
            );
        }
        let text = doc.to_string();
        for piece in text.split("\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').unwrap_or(0)];
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "unresolved $ref {name}"
            );
        }
        // Spot checks of the proto3 JSON mapping.
        let run = &doc["components"]["schemas"]["Run"]["properties"];
        assert_eq!(run["created_at"]["type"], "string");
        assert_eq!(run["tasks"]["type"], "array");
        let deploy = &doc["paths"]["/workflows"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(
            deploy["properties"]["files"]["additionalProperties"]["format"],
            "byte"
        );
        let start = &doc["paths"]["/workflows/{name}/runs"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert!(
            start["properties"].get("workflow").is_none(),
            "path-bound fields are not in the body"
        );
    }
}
