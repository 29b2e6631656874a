//! `type: http`: sends one HTTP request and checks the response status.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{FieldProblem, TaskType};

/// Sends one HTTP request; the task succeeds when the response status is expected.
#[derive(Clone, Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTask {
    /// The request method. Default `GET`.
    #[serde(default)]
    pub method: HttpMethod,
    /// `http://` or `https://` URL. Templated.
    pub url: String,
    /// Request headers. Values templated.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body. Templated.
    pub body: Option<String>,
    /// Statuses that mean success. Default: any 2xx.
    #[serde(default)]
    pub expected_status: Vec<u16>,
}

/// An HTTP method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET (the default).
    #[default]
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
}

impl TaskType for HttpTask {
    fn problems(&self) -> Vec<FieldProblem> {
        let mut problems = Vec::new();
        let url = self.url.trim_start();
        let templated_scheme = url.starts_with("{{");
        if !(templated_scheme || url.starts_with("http://") || url.starts_with("https://")) {
            problems.push(
                FieldProblem::invalid(
                    "url",
                    format!("`{}` is not an http:// or https:// URL", self.url),
                )
                .with_help("write the full URL, e.g. `https://api.example.com/refresh`"),
            );
        }
        for status in &self.expected_status {
            if !(100..=599).contains(status) {
                problems.push(FieldProblem::invalid(
                    "expected_status",
                    format!("{status} is not an HTTP status (100 to 599)"),
                ));
            }
        }
        problems
    }

    fn templates(&self) -> Vec<(String, &str)> {
        let mut templates = vec![("url".to_string(), self.url.as_str())];
        for (name, value) in &self.headers {
            templates.push((format!("headers.{name}"), value.as_str()));
        }
        if let Some(body) = &self.body {
            templates.push(("body".to_string(), body.as_str()));
        }
        templates
    }
}
