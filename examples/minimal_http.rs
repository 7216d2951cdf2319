//! The floor of HTTP on weir's stack, for `bench/http.py --reference minimal` (issue:
//! performance): the same tokio runtime, hyper's HTTP/1 connection and allocator as weir,
//! serving every POST by reading its body whole and answering 200 with a fixed body, and
//! nothing else — no routing, no parsing, no events. weir ÷ this is how close weir's request
//! path is to what the stack itself costs.
//!
//! `cargo run --release --example minimal_http -- 127.0.0.1:8080`

use std::convert::Infallible;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    // Read the body whole, as weir does before it parses it.
    let _body = request.into_body().collect().await.map(|body| body.to_bytes());
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"success\":true}")))
        .expect("a fixed response"))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&address).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), hyper::service::service_fn(answer))
                .await;
        });
    }
}
