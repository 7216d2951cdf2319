//! The floor of HTTP on weir's stack, for `bench/http.py --reference minimal` (issue:
//! performance): the same tokio runtime, hyper's HTTP/1 connection and allocator as weir,
//! serving every POST by reading its body whole and answering 200 with a fixed body, and
//! nothing else — no routing, no parsing, no events. weir ÷ this is how close weir's request
//! path is to what the stack itself costs.
//!
//! Two options add back, one at a time, the work no ingest can skip, so that what is left
//! between weir and the floor can be told apart from what the machine charges:
//! - `--durable FILE`: a 200 means on disk. Bodies go to one writer thread that appends what
//!   has queued and calls `fdatasync` once per group (group commit, as weir's journal does),
//!   and each request is answered after its group's sync.
//! - `--parse`: the body is parsed into a JSON tree (`serde_json::Value`) before it is
//!   answered (or written), as any server that looks at the events must.
//!
//! `cargo run --release --example minimal_http -- 127.0.0.1:8080 [--durable FILE] [--parse]`

use std::convert::Infallible;
use std::io::Write;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use tokio::sync::{mpsc, oneshot};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A body to make durable, and whom to tell once it is.
type Append = (Bytes, oneshot::Sender<()>);

#[derive(Clone)]
struct Server {
    durable: Option<mpsc::UnboundedSender<Append>>,
    parse: bool,
}

fn respond(status: StatusCode, body: &'static [u8]) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body)))
        .expect("a fixed response")
}

async fn answer(server: Server, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body whole, as weir does before it parses it.
    let Ok(body) = request.into_body().collect().await.map(|body| body.to_bytes()) else {
        return Ok(respond(StatusCode::BAD_REQUEST, b"{\"success\":false}"));
    };
    if server.parse && serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return Ok(respond(StatusCode::BAD_REQUEST, b"{\"success\":false}"));
    }
    if let Some(durable) = &server.durable {
        let (done, synced) = oneshot::channel();
        if durable.send((body, done)).is_err() || synced.await.is_err() {
            return Ok(respond(StatusCode::SERVICE_UNAVAILABLE, b"{\"success\":false}"));
        }
    }
    Ok(respond(StatusCode::OK, b"{\"success\":true}"))
}

/// Group commit: everything queued while the last sync ran is written and synced together.
fn write_durably(mut file: std::fs::File, mut queue: mpsc::UnboundedReceiver<Append>) {
    let mut buffer = Vec::with_capacity(1 << 20);
    let mut waiting = Vec::new();
    while let Some((body, done)) = queue.blocking_recv() {
        buffer.extend_from_slice(&body);
        waiting.push(done);
        while let Ok((body, done)) = queue.try_recv() {
            buffer.extend_from_slice(&body);
            waiting.push(done);
        }
        file.write_all(&buffer).expect("writing the durable file");
        file.sync_data().expect("fdatasync of the durable file");
        buffer.clear();
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut address = "127.0.0.1:8080".to_owned();
    let mut server = Server {
        durable: None,
        parse: false,
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--parse" => server.parse = true,
            "--durable" => {
                let path = args.next().expect("--durable FILE");
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                let (sender, queue) = mpsc::unbounded_channel();
                std::thread::spawn(move || write_durably(file, queue));
                server.durable = Some(sender);
            }
            _ => address = arg,
        }
    }
    let listener = tokio::net::TcpListener::bind(&address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| answer(server.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}
