//! AWS clients for an `aws` connection: the standard credential chain (environment, profile,
//! web identity, container and instance roles), an optional role assumed on top of it, and an
//! endpoint override for emulators. One TLS stack: rustls with ring.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

/// The SDK configuration of an `aws` connection.
pub(crate) async fn sdk_config(
    region: &str,
    role_arn: Option<&str>,
    endpoint: Option<&str>,
) -> SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .http_client(http);
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    let base = loader.load().await;
    let Some(role) = role_arn else {
        return base;
    };
    let provider = aws_config::sts::AssumeRoleProvider::builder(role)
        .session_name("ferry")
        .configure(&base)
        .build()
        .await;
    base.into_builder()
        .credentials_provider(aws_sdk_s3::config::SharedCredentialsProvider::new(provider))
        .build()
}

/// An S3 client (path-style addressing when an endpoint is set: emulators and S3-compatible
/// stores need it).
pub(crate) fn s3(config: &SdkConfig, endpoint: Option<&str>) -> aws_sdk_s3::Client {
    let s3 = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(endpoint.is_some())
        .build();
    aws_sdk_s3::Client::from_conf(s3)
}

/// What an AWS error says, for people: the service's code and message, else the SDK's text.
pub(crate) fn describe<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                (None, Some(message)) => message.to_string(),
                (None, None) => inner.to_string(),
            }
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
    }
}

/// Whether another try may succeed: throttling, a server error, or the network.
pub(crate) fn is_transient<E>(error: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ResponseError(response) => response.raw().status().as_u16() >= 500,
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500
                || status == 429
                || service.err().code().is_some_and(|code| {
                    matches!(
                        code,
                        "Throttling"
                            | "ThrottlingException"
                            | "TooManyRequestsException"
                            | "RequestLimitExceeded"
                            | "SlowDown"
                            | "ServiceUnavailable"
                            | "InternalServiceException"
                            | "InternalServerException"
                            | "ConcurrentRunsExceededException"
                    )
                })
        }
        _ => false,
    }
}

/// A failed call: transient errors (after their retries) may pass on another try of the task,
/// the others fail it at once.
pub(crate) fn failure<E>(error: &SdkError<E, HttpResponse>, what: &str) -> ferry_executor::Outcome
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = ferry_secrets::redact_text(&format!("{what}: {}", describe(error)));
    if is_transient(error) {
        ferry_executor::Outcome::failed(None, reason)
    } else {
        ferry_executor::Outcome::fatal(reason)
    }
}
