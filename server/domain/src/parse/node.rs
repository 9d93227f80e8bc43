//! A YAML document as a tree that remembers where each node was written, so
//! that validation errors can point at a line and column.
//!
//! serde-saphyr does the parsing (with budgets on depth, node count and alias
//! expansion); its `Spanned` wrapper gives the position of every node.

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::ParseLimits;

/// Largest YAML document accepted by default, checked before parsing.
pub(crate) const MAX_YAML_BYTES: usize = 1024 * 1024;
/// Deepest nesting ever accepted. Workflows use 3 levels down to a task's
/// input, leaving 21 for the input itself. The budget is checked before
/// deserializing, whose recursion costs up to ~40 KiB of stack per level in
/// debug builds: 24 levels keep it within a 2 MiB thread stack, so no
/// configuration may raise it.
pub(crate) const MAX_DEPTH: usize = 24;
/// Most nodes (after alias expansion) in one document, by default.
pub(crate) const MAX_NODES: usize = 100_000;

/// Where a node starts (1-based); `0` when the parser could not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

impl Pos {
    pub(crate) fn line(self) -> Option<usize> {
        (self.line > 0).then_some(self.line)
    }

    pub(crate) fn column(self) -> Option<usize> {
        (self.line > 0 && self.column > 0).then_some(self.column)
    }
}

/// One YAML node and its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; keys are nodes too, for their positions.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What the node is, for "expected X, found Y" messages.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing (null)".to_owned(),
            Kind::Bool(b) => format!("`{b}`"),
            Kind::Int(i) => format!("the number `{i}`"),
            Kind::UInt(u) => format!("the number `{u}`"),
            Kind::Float(f) => format!("the number `{f}`"),
            Kind::Str(s) => format!("the string `{}`", shorten(s, 40)),
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The key as text when it is a scalar; mapping keys in a workflow are names.
    pub(crate) fn key_text(&self) -> Option<String> {
        match &self.kind {
            Kind::Str(s) => Some(s.clone()),
            Kind::Int(i) => Some(i.to_string()),
            Kind::UInt(u) => Some(u.to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Converts to JSON. Fails on keys that are not scalars and on non-finite
    /// numbers, which JSON cannot hold. Depth is bounded by the parse budget.
    pub(crate) fn to_json(&self) -> Result<serde_json::Value, (Pos, String)> {
        use serde_json::Value;
        Ok(match &self.kind {
            Kind::Null => Value::Null,
            Kind::Bool(b) => Value::Bool(*b),
            Kind::Int(i) => Value::from(*i),
            Kind::UInt(u) => Value::from(*u),
            Kind::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .ok_or_else(|| {
                    (
                        self.pos,
                        format!("`{f}` is not a finite number; JSON cannot hold it"),
                    )
                })?,
            Kind::Str(s) => Value::String(s.clone()),
            Kind::Seq(items) => Value::Array(
                items
                    .iter()
                    .map(Node::to_json)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            Kind::Map(entries) => {
                let mut map = serde_json::Map::new();
                for (k, v) in entries {
                    let key = k.key_text().ok_or_else(|| {
                        (
                            k.pos,
                            format!("mapping keys must be text, found {}", k.describe()),
                        )
                    })?;
                    map.insert(key, v.to_json()?);
                }
                Value::Object(map)
            }
        })
    }
}

/// Cuts `text` to at most `max` chars, marking the cut with `...`.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}...", &text[..at]),
    }
}

/// A YAML syntax or budget error, with the position the parser reported.
#[derive(Debug)]
pub(crate) struct LoadError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document into a [`Node`] tree, refusing oversized input,
/// deep nesting and alias bombs before they cost memory or time.
pub(crate) fn load(yaml: &str, limits: &ParseLimits) -> Result<Node, LoadError> {
    if yaml.len() > limits.max_bytes {
        return Err(LoadError {
            pos: Pos::default(),
            message: format!(
                "the workflow file is {} bytes, more than the limit of {}; \
                 move large data out of the YAML (the server's --max-yaml-bytes)",
                yaml.len(),
                limits.max_bytes
            ),
        });
    }
    let max_depth = limits.max_depth.min(MAX_DEPTH);
    let max_nodes = limits.max_nodes;
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: max_depth,
            max_nodes: max_nodes,
            max_events: max_nodes.saturating_mul(4),
            max_documents: 1,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: max_nodes,
        },
        // YAML 1.2 booleans only: `y`, `no`, `on` stay strings (keys included),
        // so `input: { y: 1 }` means what it says.
        strict_booleans: true,
    };
    match serde_saphyr::from_str_with_options::<Spanned<Kind>>(yaml, options) {
        Ok(root) => Ok(spanned_to_node(root)),
        Err(err) => {
            let pos = err
                .location()
                .map(|l| Pos {
                    line: usize::try_from(l.line()).unwrap_or(0),
                    column: usize::try_from(l.column()).unwrap_or(0),
                })
                .unwrap_or_default();
            let mut message = err.without_snippet().to_string();
            // The message repeats the position we already print in front.
            let suffix = format!(" at line {}, column {}", pos.line, pos.column);
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
            Err(LoadError {
                pos,
                message: format!(
                    "invalid yaml: {}",
                    user_message(&message, max_depth, max_nodes)
                ),
            })
        }
    }
}

/// Rewrites the parser's messages that speak of its own options and
/// internals into what a workflow author can act on.
fn user_message(message: &str, max_depth: usize, max_nodes: usize) -> String {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        format!("duplicate key `{key}`; keep only one of them")
    } else if message.starts_with("budget breached: Depth") {
        format!(
            "nesting is deeper than {max_depth} levels; flatten the data (the server's --max-yaml-depth)"
        )
    } else if message.starts_with("alias replay limit exceeded")
        || message.starts_with("budget breached: Nodes")
        || message.starts_with("budget breached: Events")
        || message.starts_with("budget breached: Alias")
    {
        format!(
            "the document expands to more than {max_nodes} values (aliases count once per use); shrink it (the server's --max-yaml-nodes)"
        )
    } else if let Some(rest) = message.strip_prefix("budget breached: ") {
        format!("the document exceeds a size limit ({rest}); shrink it")
    } else {
        message.to_owned()
    }
}

fn spanned_to_node(spanned: Spanned<Kind>) -> Node {
    Node {
        pos: Pos {
            line: usize::try_from(spanned.referenced.line()).unwrap_or(0),
            column: usize::try_from(spanned.referenced.column()).unwrap_or(0),
        },
        kind: spanned.value,
    }
}

/// `Node` deserializes through `Spanned` so that every child keeps its position.
impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::<Kind>::deserialize(d).map(spanned_to_node)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KindVisitor)
    }
}

struct KindVisitor;

impl<'de> Visitor<'de> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_none<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        Kind::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
        Ok(Kind::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
        Ok(Kind::Int(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
        Ok(Kind::UInt(v))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Kind, E> {
        i64::try_from(v)
            .map(Kind::Int)
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Kind, E> {
        u64::try_from(v)
            .map(Kind::UInt)
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
        Ok(Kind::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Kind, E> {
        Ok(Kind::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Kind, E> {
        Ok(Kind::Str(v))
    }

    fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Kind, E> {
        Err(E::custom("binary values are not supported; use a string"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Kind::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<Node, Node>()? {
            entries.push(entry);
        }
        Ok(Kind::Map(entries))
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<Kind, A::Error> {
        Err(A::Error::custom(
            "tagged values are not supported; remove the `!tag`",
        ))
    }
}
