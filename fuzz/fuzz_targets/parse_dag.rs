//! Any input to the DAG parser and checks must give diagnostics, never a panic.
#![no_main]

use std::path::Path;

use ferry_dag::{Templates, parse_dag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let templates = Templates::new();
        let parsed = parse_dag(Path::new("dags/user-facing/fuzz.yaml"), text, &templates);
        if let Some(dag) = parsed.dag {
            if let (Some(schedule), Some(start)) = (&dag.schedule, dag.start_date) {
                let _ = schedule.upcoming(start, dag.end_date, start, 3);
            }
        }
    }
});
