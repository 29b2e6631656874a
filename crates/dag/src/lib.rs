//! x
pub mod dag;
pub mod diagnostic;
pub mod duration;
pub mod graph;
pub mod node;
pub mod spec;
pub mod tasks;
pub mod template;
pub mod timetable;
