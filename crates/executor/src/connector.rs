//! Work on a named connection (`query` tasks today; transfers and cloud jobs next): the engine
//! hands it to a [`Connectors`] implementation that the binary provides, so that the engine
//! does not compile database drivers or cloud SDKs.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{LogBuffer, Outcome};

/// What a task asks of a connection, rendered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectorWork {
    /// Run SQL in one transaction.
    Query {
        /// The connection's name.
        connection: String,
        /// The SQL, rendered.
        sql: String,
        /// The task's `timeout`.
        timeout: Option<Duration>,
    },
}

/// Runs connector work. `cancel` asks it to stop (a shutdown, a run timeout, an operator's
/// clear): it then rolls back what it did and returns a failure.
pub trait Connectors: Send + Sync {
    /// Does `work`, writing what it did to `log`.
    fn run<'a>(
        &'a self,
        work: &'a ConnectorWork,
        log: &'a LogBuffer,
        cancel: &'a CancellationToken,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;
}

/// A [`Connectors`] shared by the engine and its attempts.
#[derive(Clone)]
pub struct SharedConnectors(pub std::sync::Arc<dyn Connectors>);

impl std::fmt::Debug for SharedConnectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedConnectors")
    }
}
