//! A recording HTTP server standing in for a RudderStack data plane: it listens on a free
//! loopback port, checks basic auth against the write key, un-gzips bodies, records every
//! request, and answers from a script of replies (200 once the script runs out).

use std::collections::VecDeque;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// One request as the data plane saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, un-gzipped.
    pub body: Vec<u8>,
    /// Whether the Authorization header carried the expected write key.
    pub authorized: bool,
    /// The status it was answered with.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    /// The messages of the body's `batch`.
    pub fn messages(&self) -> Vec<serde_json::Value> {
        self.json()["batch"].as_array().cloned().unwrap_or_default()
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }
}

struct State {
    write_key: String,
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<VecDeque<Reply>>,
}

pub struct Recorder {
    pub base: String,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// A plain recording server (a webhook): every request counts as authorized.
    pub fn open() -> Recorder {
        Recorder::start("")
    }

    /// Starts a data plane that accepts `write_key` (any request when it is empty).
    pub fn start(write_key: &str) -> Recorder {
        let state = Arc::new(State {
            write_key: write_key.into(),
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = served.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |request| handle(state.clone(), request));
                                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                            });
                        }
                    }
                }
            });
        });
        Recorder {
            base,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Answers the next requests with these replies, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Drops the replies not yet used: the next requests are answered 200 again.
    pub fn unscript(&self) {
        self.state.script.lock().unwrap().clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Every message of every request answered 2xx, in arrival order.
    pub fn delivered(&self) -> Vec<serde_json::Value> {
        self.requests()
            .iter()
            .filter(|request| (200..300).contains(&request.status))
            .flat_map(Recorded::messages)
            .collect()
    }

    /// Waits until at least `count` messages were delivered (at most `limit`).
    pub fn wait_for(&self, count: usize, limit: Duration) -> Vec<serde_json::Value> {
        super::eventually(limit, || self.delivered().len() >= count);
        self.delivered()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let at = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("").to_owned()))
        .collect();
    let raw = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let gzipped = headers
        .iter()
        .any(|(name, value)| name == "content-encoding" && value == "gzip");
    let body = if gzipped {
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut decoded)
            .expect("a gzip body");
        decoded
    } else {
        raw.to_vec()
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", state.write_key))
    );
    let authorized = state.write_key.is_empty()
        || headers
            .iter()
            .any(|(name, value)| name == "authorization" && *value == expected);
    let reply = if authorized {
        state
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::status(200).body("OK"))
    } else {
        Reply::status(401).body("Invalid write key")
    };
    state.requests.lock().unwrap().push(Recorded {
        at,
        method,
        path,
        headers,
        body,
        authorized,
        status: reply.status,
    });
    let mut response = Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    Ok(response.body(Full::new(Bytes::from(reply.body))).unwrap())
}
