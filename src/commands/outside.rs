//! Connector work run by a command rather than the engine (`ferry sync plan`, the benchmarks):
//! one attempt, its figures kept in memory.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use ferry_executor::connector::{
    AttemptKey, AttemptRecorder, AttemptScope, ConnectorWork, Connectors,
};
use ferry_executor::{LogBuffer, Outcome};
use tokio_util::sync::CancellationToken;

/// Keeps the figures an attempt reports.
#[derive(Default)]
struct Figures(Mutex<BTreeMap<String, i64>>);

impl AttemptRecorder for Figures {
    fn external_job<'a>(&'a self, _id: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async {})
    }

    fn metrics<'a>(
        &'a self,
        figures: &'a BTreeMap<String, i64>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            if let Ok(mut all) = self.0.lock() {
                all.extend(figures.iter().map(|(k, v)| (k.clone(), *v)));
            }
        })
    }
}

/// What one attempt did.
pub(crate) struct Done {
    /// How it ended.
    pub(crate) outcome: Outcome,
    /// Its log.
    pub(crate) log: String,
    /// Its figures (`rows_read`, ...).
    pub(crate) figures: BTreeMap<String, i64>,
}

/// Runs `work` as attempt `key` to its end.
pub(crate) async fn attempt(
    connectors: &dyn Connectors,
    work: &ConnectorWork,
    key: &AttemptKey,
) -> Done {
    let figures = Figures::default();
    let log = LogBuffer::new(256 * 1024);
    let (cancel, shutting_down) = (CancellationToken::new(), CancellationToken::new());
    let outcome = connectors
        .run(
            work,
            AttemptScope {
                key,
                resuming: false,
                resumed_job: None,
                elapsed: std::time::Duration::ZERO,
                recorder: &figures,
                log: &log,
                cancel: &cancel,
                shutting_down: &shutting_down,
            },
        )
        .await;
    Done {
        outcome,
        log: log.text(),
        figures: figures.0.into_inner().unwrap_or_default(),
    }
}
