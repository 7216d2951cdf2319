//! `weir tap`: events as they pass a running weir, with what became of each at each
//! destination and the wire form sent, read from the admin listener's `/tap` (Server-Sent
//! Events). Filters go to weir, so a busy weir sends only what was asked for. A tap that
//! cannot keep up loses records, never slows weir: weir says how many were dropped, and so
//! does this command (on stderr, or as a `{"dropped": n}` line with `--json`).

use std::io::Write;

use anyhow::Context;

#[derive(clap::Args, Debug)]
pub struct TapArgs {
    /// The admin listener of the weir to watch.
    #[arg(long, env = "WEIR_ADMIN_URL", default_value = "http://127.0.0.1:9100")]
    admin: String,
    /// The admin bearer token (`admin.bearerToken`).
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Only events taken in by this source.
    #[arg(long)]
    source: Option<String>,
    /// Only what happened at this destination.
    #[arg(long)]
    destination: Option<String>,
    /// Only events whose name matches (`*` matches any run of characters), e.g. 'order *'.
    #[arg(long)]
    name: Option<String>,
    /// Only these outcomes: delivered, dead_lettered, failed, ignored, consent, skipped, held.
    #[arg(long, value_delimiter = ',')]
    outcome: Vec<String>,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// One JSON object per line (`time`, `source`, `destination`, `outcome`, `reason`,
    /// `event`, `wire`).
    #[arg(long)]
    json: bool,
}

pub fn tap(args: TapArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(watch(args))
}

async fn watch(args: TapArgs) -> anyhow::Result<()> {
    let mut url = reqwest::Url::parse(&args.admin)
        .and_then(|base| base.join("/tap"))
        .with_context(|| format!("--admin {} is not a URL (e.g. http://127.0.0.1:9100)", args.admin))?;
    {
        let mut query = url.query_pairs_mut();
        for (key, value) in [
            ("source", args.source.as_deref()),
            ("destination", args.destination.as_deref()),
            ("name", args.name.as_deref()),
        ] {
            if let Some(value) = value {
                query.append_pair(key, value);
            }
        }
        if !args.outcome.is_empty() {
            query.append_pair("outcome", &args.outcome.join(","));
        }
    }
    let mut request = reqwest::Client::new().get(url.clone());
    if let Some(token) = &args.token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await.with_context(|| {
        format!(
            "cannot reach weir's admin listener at {}: is weir running, and is that its `admin.listen`?",
            args.admin
        )
    })?;
    match response.status() {
        reqwest::StatusCode::OK => {}
        reqwest::StatusCode::UNAUTHORIZED => {
            anyhow::bail!("weir refused the tap (401): pass its admin.bearerToken with --token or WEIR_ADMIN_TOKEN")
        }
        status => anyhow::bail!("weir answered {status} to {url}"),
    }
    // On stderr, also with --json: the tap is attached from here on.
    eprintln!("tapping {} (Ctrl-C to stop)", args.admin);
    let mut stdout = std::io::stdout().lock();
    let mut seen = 0u64;
    let mut frames = Frames::default();
    while let Some(chunk) = response.chunk().await.context("the tap connection broke")? {
        for (event, data) in frames.push(&chunk) {
            match event.as_str() {
                "tap" => {
                    if args.json {
                        writeln!(stdout, "{data}")?;
                    } else {
                        writeln!(stdout, "{}", describe(&data))?;
                    }
                    seen += 1;
                }
                "dropped" => {
                    if args.json {
                        writeln!(stdout, "{data}")?;
                    } else {
                        let missed = serde_json::from_str::<serde_json::Value>(&data)
                            .ok()
                            .and_then(|value| value["dropped"].as_u64())
                            .unwrap_or_default();
                        eprintln!("… {missed} records dropped: this tap fell behind (weir did not wait for it)");
                    }
                }
                _ => {}
            }
            stdout.flush()?;
            if args.limit.is_some_and(|limit| seen >= limit) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// One record as a line (and its wire form on the next) for people.
fn describe(data: &str) -> String {
    let Ok(record) = serde_json::from_str::<serde_json::Value>(data) else {
        return data.to_owned();
    };
    let time = record["time"]
        .as_u64()
        .map(|millis| {
            let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis);
            humantime::format_rfc3339_millis(time).to_string()
        })
        .unwrap_or_default();
    let text = |key: &str| record[key].as_str().unwrap_or("-").to_owned();
    let mut line = format!(
        "{time}  {} → {}  {}  {:?} {}",
        text("source"),
        text("destination"),
        text("outcome"),
        record["event"]["name"].as_str().unwrap_or_default(),
        record["event"]["id"].as_str().unwrap_or_default(),
    );
    if let Some(reason) = record["reason"].as_str() {
        line.push_str(&format!("\n    reason: {reason}"));
    }
    if !record["wire"].is_null() {
        line.push_str(&format!("\n    wire: {}", record["wire"]));
    }
    line
}

/// Server-Sent-Events frames out of a byte stream: `event:` and `data:` lines up to a blank
/// line. By hand: the admin listener sends one `data:` line per event and weir reads only
/// its own frames, so the parsing is a few lines.
#[derive(Default)]
struct Frames {
    buffer: Vec<u8>,
    event: String,
    data: String,
}

impl Frames {
    fn push(&mut self, chunk: &[u8]) -> Vec<(String, String)> {
        self.buffer.extend_from_slice(chunk);
        let mut done = Vec::new();
        while let Some(end) = self.buffer.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.data.is_empty() {
                    done.push((std::mem::take(&mut self.event), std::mem::take(&mut self.data)));
                }
                self.event.clear();
            } else if let Some(value) = line.strip_prefix("event:") {
                self.event = value.trim_start().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::Frames;

    #[test]
    fn frames_split_across_chunks_and_comments_are_skipped() {
        let mut frames = Frames::default();
        assert!(frames.push(b": keep-alive\n\nevent: tap\nda").is_empty());
        let done = frames.push(b"ta: {\"a\":1}\n\nevent: dropped\ndata: {\"dropped\":3}\r\n\r\n");
        assert_eq!(
            done,
            vec![
                ("tap".to_owned(), "{\"a\":1}".to_owned()),
                ("dropped".to_owned(), "{\"dropped\":3}".to_owned())
            ]
        );
    }
}
