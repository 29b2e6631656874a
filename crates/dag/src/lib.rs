//! x
pub mod diagnostic;
pub mod node;
pub mod timetable;
