//! Issue 8: the Forward tasks against real emulators (moto for Glue and Step Functions,
//! bqemulator for BigQuery), and against small local stubs of the same APIs for what the
//! emulators cannot produce (a FAILED Glue run, a job that never ends, throttling).

mod emulators;
mod stub;

mod bigquery;
mod dashboard;
mod glue;
mod resume;
mod stepfunctions;
mod transfer;
mod waits;
