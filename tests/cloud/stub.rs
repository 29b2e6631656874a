//! A small local HTTP server that answers like an AWS JSON API or BigQuery's REST API, for the
//! paths the emulators cannot produce. It keeps every request it got.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request: the `X-Amz-Target` (or `METHOD path` for REST), and the body.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub(crate) what: String,
    pub(crate) body: String,
}

/// An answer: status and JSON body.
pub(crate) type Answer = (u16, String);

/// A running stub.
pub(crate) struct Stub {
    pub(crate) url: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Stub {
    /// Starts a stub that answers each request with `answer(call, how many calls of the same
    /// kind came before)`.
    pub(crate) fn start(answer: impl Fn(&Call, usize) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(answer);
        let kept = calls.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let calls = kept.clone();
                let answer = answer.clone();
                std::thread::spawn(move || serve(stream, &calls, answer.as_ref()));
            }
        });
        Self { url, calls }
    }

    /// The requests so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("calls").clone()
    }

    /// How many requests of `what` came.
    pub(crate) fn count(&self, what: &str) -> usize {
        self.calls().iter().filter(|c| c.what == what).count()
    }
}

fn serve(
    stream: std::net::TcpStream,
    calls: &Mutex<Vec<Call>>,
    answer: &(dyn Fn(&Call, usize) -> Answer + Send + Sync),
) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut target = None;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "x-amz-target" => target = Some(value.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let what = target.unwrap_or_else(|| {
            let mut parts = request_line.split_whitespace();
            let method = parts.next().unwrap_or_default();
            let path = parts.next().unwrap_or_default();
            format!("{method} {}", path.split('?').next().unwrap_or_default())
        });
        let call = Call {
            what,
            body: String::from_utf8_lossy(&body).to_string(),
        };
        let before = {
            let mut calls = calls.lock().expect("calls");
            let before = calls.iter().filter(|c| c.what == call.what).count();
            calls.push(call.clone());
            before
        };
        let (status, body) = answer(&call, before);
        let reason = if status < 400 { "OK" } else { "Error" };
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
