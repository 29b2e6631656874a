//! `http` tasks: one request; the response status decides.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{LogBuffer, Outcome};

/// One attempt of an http task, rendered.
#[derive(Clone, Debug)]
pub struct HttpSpec {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The URL.
    pub url: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Option<String>,
    /// Statuses that mean success (empty: any 2xx).
    pub expected_status: Vec<u16>,
    /// Give up after this long.
    pub timeout: Option<Duration>,
}

/// How much of a response body goes to the log.
const LOGGED_BODY: usize = 16 * 1024;

/// Sends the request. Transport errors, 429 and 5xx are retryable (429 and 503 honour
/// `Retry-After` in seconds); other unexpected statuses are not.
pub async fn run(
    client: &reqwest::Client,
    spec: &HttpSpec,
    log: &LogBuffer,
    cancel: &CancellationToken,
) -> Outcome {
    let method = match reqwest::Method::from_bytes(spec.method.as_bytes()) {
        Ok(method) => method,
        Err(_) => {
            return Outcome::Failed {
                retryable: false,
                retry_after: None,
                code: None,
                reason: format!("invalid method `{}`", spec.method),
            };
        }
    };
    let mut request = client.request(method, &spec.url);
    for (name, value) in &spec.headers {
        request = request.header(name, value);
    }
    if let Some(body) = &spec.body {
        request = request.body(body.clone());
    }
    if let Some(timeout) = spec.timeout {
        request = request.timeout(timeout);
    }
    log.note(&format!("{} {}", spec.method, spec.url));
    let response = tokio::select! {
        response = request.send() => response,
        () = cancel.cancelled() => return Outcome::failed(None, "stopped because ferry is shutting down"),
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            let reason = if error.is_timeout() {
                "the request timed out".to_string()
            } else {
                format!("request failed: {error}")
            };
            log.note(&reason);
            return Outcome::failed(None, reason);
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response.text().await.unwrap_or_default();
    log.note(&format!("→ {status}"));
    log.push(
        body.get(..LOGGED_BODY.min(body.len()))
            .unwrap_or(&body)
            .as_bytes(),
    );
    let code = Some(i64::from(status.as_u16()));
    let expected = if spec.expected_status.is_empty() {
        status.is_success()
    } else {
        spec.expected_status.contains(&status.as_u16())
    };
    if expected {
        Outcome::Succeeded { code }
    } else {
        Outcome::Failed {
            retryable: status.is_server_error() || status.as_u16() == 429,
            retry_after,
            code,
            reason: format!("unexpected status {status}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A one-shot HTTP server on 127.0.0.1 answering with `status_line` and `headers`.
    async fn answer_once(status_line: &'static str, headers: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let reply = format!(
                    "HTTP/1.1 {status_line}\r\n{headers}content-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        format!("http://{address}/refresh")
    }

    fn spec(url: String) -> HttpSpec {
        HttpSpec {
            method: "POST".into(),
            url,
            headers: vec![],
            body: Some("{}".into()),
            expected_status: vec![],
            timeout: Some(Duration::from_secs(5)),
        }
    }

    #[tokio::test]
    async fn a_2xx_succeeds_and_is_logged() {
        let log = LogBuffer::new(4096);
        let outcome = run(
            &reqwest::Client::new(),
            &spec(answer_once("200 OK", "").await),
            &log,
            &CancellationToken::new(),
        )
        .await;
        assert_eq!(outcome, Outcome::Succeeded { code: Some(200) });
        assert!(log.text().contains("→ 200 OK"), "{}", log.text());
    }

    #[tokio::test]
    async fn a_429_is_retryable_after_its_delay() {
        let log = LogBuffer::new(4096);
        let outcome = run(
            &reqwest::Client::new(),
            &spec(answer_once("429 Too Many Requests", "retry-after: 7\r\n").await),
            &log,
            &CancellationToken::new(),
        )
        .await;
        assert!(
            matches!(outcome, Outcome::Failed { retryable: true, retry_after: Some(d), code: Some(429), .. } if d == Duration::from_secs(7)),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn a_4xx_is_not_retryable_unless_expected() {
        let log = LogBuffer::new(4096);
        let outcome = run(
            &reqwest::Client::new(),
            &spec(answer_once("404 Not Found", "").await),
            &log,
            &CancellationToken::new(),
        )
        .await;
        assert!(
            matches!(
                outcome,
                Outcome::Failed {
                    retryable: false,
                    code: Some(404),
                    ..
                }
            ),
            "{outcome:?}"
        );
        let expected = HttpSpec {
            expected_status: vec![404],
            ..spec(answer_once("404 Not Found", "").await)
        };
        assert_eq!(
            run(
                &reqwest::Client::new(),
                &expected,
                &log,
                &CancellationToken::new()
            )
            .await,
            Outcome::Succeeded { code: Some(404) }
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retryable() {
        let log = LogBuffer::new(4096);
        let outcome = run(
            &reqwest::Client::new(),
            &spec("http://127.0.0.1:9/".into()),
            &log,
            &CancellationToken::new(),
        )
        .await;
        assert!(
            matches!(
                outcome,
                Outcome::Failed {
                    retryable: true,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
}
