//! ork's pure domain layer: the workflow model, YAML parsing and validation,
//! templates, DAG planning and scheduling decisions.
//!
//! Nothing here does I/O, reads a clock or spawns tasks; the server calls
//! these functions inside its transactions and tests call them directly.

pub mod attempt;
pub mod dag;
pub mod decide;
pub mod events;
pub mod inputs;
pub mod labels;
pub mod model;
pub mod parse;
pub mod quantity;
pub mod schedule;
pub mod schema;
pub mod suggest;
pub mod task_metrics;
pub mod template;
pub mod types;

pub use model::*;
