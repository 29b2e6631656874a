//! `ferry connections list` and `ferry connections test`.

use std::process::ExitCode;

use anyhow::{Result, bail};
use ferry_config::Config;
use serde_json::json;

use super::engine::block_on;
use crate::cli::Format;
use crate::output;

pub(crate) fn list(config: &Config, format: Format) -> Result<ExitCode> {
    let connections = config.connections();
    match format {
        Format::Json => output::json(&json!({
            "environment": config.environment,
            "connections": connections
                .iter()
                .map(|(name, connection)| json!({
                    "name": name,
                    "kind": connection.kind(),
                    "target": connection.target(),
                }))
                .collect::<Vec<_>>(),
        })),
        Format::Text => {
            let rows: Vec<Vec<String>> = connections
                .iter()
                .map(|(name, connection)| {
                    vec![
                        name.clone(),
                        connection.kind().to_string(),
                        connection.target(),
                    ]
                })
                .collect();
            out!("environment {}", config.environment);
            output::table(&["NAME", "KIND", "TARGET"], &rows);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn test(config: &Config, name: &str) -> Result<ExitCode> {
    let connections = config.connections();
    let Some(connection) = connections.get(name) else {
        let names: Vec<&str> = connections.keys().map(String::as_str).collect();
        let hint = ferry_dag::diagnostic::suggestion(name, names.iter().copied())
            .map(|hint| format!("; {hint}"))
            .unwrap_or_default();
        bail!(
            "no connection `{name}` in the environment `{}`{hint} (defined: {})",
            config.environment,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
    };
    let said = block_on(async { Ok(ferry_connectors::test(name, connection).await?) })?;
    out!("connection {name} ({}): ok, {said}", connection.kind());
    Ok(ExitCode::SUCCESS)
}
