//! A minimal Redis Streams → SSE fan-out, the reference of `bench/streams.py`'s latency runs
//! (issue: performance). It does little more than no fan-out can skip:
//! - one task reads the stream through a consumer group: XREADGROUP BLOCK, COUNT 100, and an
//!   XACK per batch, with the same redis-rs client as weir;
//! - it frames each entry as `id:`, `event:`, `data:` (the entry's `event` field), joins a
//!   batch into one buffer, and writes it to every connected client in turn.
//!
//! There is no hyper, no task per client, no chunked encoding and no queue: one `write` per
//! socket per batch, from the reading task itself. A client whose socket cannot take a whole
//! batch at once is dropped, which the bench would see as missing frames. What is left is
//! mostly the kernel's cost of the writes, so weir's p99 ÷ this one's says how much of the
//! latency is weir's. It is not a strict floor: it waits for each XACK before reading again,
//! and one task writing every socket in turn lets the last ones wait for the first.
//!
//! `cargo run --release --example minimal_sse -- 127.0.0.1:8080 redis://127.0.0.1:6379 STREAM`

use std::sync::{Arc, Mutex};

use redis::streams::StreamReadReply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Clients = Arc<Mutex<Vec<TcpStream>>>;

/// Reads a request head, answers with the event-stream head and joins the clients.
async fn subscribe(mut socket: TcpStream, clients: Clients) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = socket.read(&mut buffer).await?;
        if read == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buffer[..read]);
    }
    socket
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
        .await?;
    clients.lock().expect("clients lock").push(socket);
    Ok(())
}

/// Writes `frames` whole to every client, dropping those that cannot take it now.
fn fan_out(clients: &Clients, frames: &[u8]) {
    clients.lock().expect("clients lock").retain(|socket| {
        let mut written = 0;
        while written < frames.len() {
            match socket.try_write(&frames[written..]) {
                Ok(0) | Err(_) => return false,
                Ok(n) => written += n,
            }
        }
        true
    });
}

fn frame(out: &mut Vec<u8>, id: &str, data: &[u8]) {
    out.extend_from_slice(b"id: ");
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(b"\nevent: bench tick\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let stream = args.next().unwrap_or_else(|| "ticks".to_owned());

    // XREADGROUP blocks for up to a second: longer than the client's default reply timeout.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut redis = redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg("minimal")
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut redis)
        .await;
    if let Err(error) = created
        && error.code() != Some("BUSYGROUP")
    {
        return Err(error.into());
    }

    let clients: Clients = Arc::default();
    let listener = TcpListener::bind(&address).await?;
    let accepting = clients.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(subscribe(socket, accepting.clone()));
        }
    });

    let mut frames = Vec::with_capacity(64 * 1024);
    loop {
        let reply: StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("minimal")
            .arg("minimal")
            .arg("COUNT")
            .arg(100)
            .arg("BLOCK")
            .arg(1000)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query_async(&mut redis)
            .await?;
        let entries: Vec<_> = reply.keys.into_iter().flat_map(|key| key.ids).collect();
        if entries.is_empty() {
            continue;
        }
        frames.clear();
        for entry in &entries {
            if let Some(redis::Value::BulkString(data)) = entry.map.get("event") {
                frame(&mut frames, &entry.id, data);
            }
        }
        fan_out(&clients, &frames);
        let mut ack = redis::cmd("XACK");
        ack.arg(&stream).arg("minimal");
        for entry in &entries {
            ack.arg(&entry.id);
        }
        let _: u64 = ack.query_async(&mut redis).await?;
    }
}
