//! Schema validation of every write (filled in by the validation commit).

pub mod names;
pub mod schema;
