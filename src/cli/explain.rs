//! `weir explain`: runs events through the collector and every destination's mapping and
//! render code — the same code `serve` sends with — and prints the outcome and wire form,
//! without connecting to anything.

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::Context;
use serde_json::{Map, Value};

use crate::assembly::build_flow;
use crate::config::Flow;
use crate::delivery::route::Outcome;

/// `ingest`: the JSON object the events' request ingest is taken to be.
pub fn explain(flow: &Flow, source: Option<&str>, ingest: Option<&str>, events: Option<&Path>) -> anyhow::Result<()> {
    let ingest = match ingest.map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(object @ Value::Object(_))) => Some(std::sync::Arc::new(crate::event::Ingest::new(object))),
        Some(Ok(_)) => anyhow::bail!("--ingest must be a JSON object, e.g. '{{\"ip\": \"203.0.113.9\"}}'"),
        Some(Err(error)) => anyhow::bail!("--ingest is not JSON: {error}"),
    };
    let built = build_flow(flow).map_err(|errors| anyhow::anyhow!("the flow is invalid:\n{errors}"))?;
    for warning in &built.warnings {
        eprintln!("warning: {warning}");
    }
    let source = match source {
        Some(source) => source.to_owned(),
        None => flow.sources.first().map_or_else(|| "http".to_owned(), |s| s.id.clone()),
    };
    let reader: Box<dyn BufRead> = match events {
        None => Box::new(std::io::stdin().lock()),
        Some(path) if path == Path::new("-") => Box::new(std::io::stdin().lock()),
        Some(path) => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let destinations: Vec<String> = built
        .runtime
        .routes()
        .iter()
        .filter(|route| route.takes_source(&source))
        .map(|route| route.id().to_owned())
        .collect();
    for (index, line) in reader.lines().enumerate() {
        let line = line.context("cannot read the events")?;
        if line.trim().is_empty() {
            continue;
        }
        let rejected = |reason: String, id: Value, out: &mut dyn Write| -> anyhow::Result<()> {
            for destination in &destinations {
                let mut record = Map::new();
                record.insert("event".into(), Value::from(index));
                record.insert("id".into(), id.clone());
                record.insert("destination".into(), Value::from(destination.as_str()));
                record.insert("outcome".into(), Value::from(Outcome::Rejected.label()));
                record.insert("reason".into(), Value::from(reason.as_str()));
                out.write_all(&crate::json::to_vec(&record))?;
                out.write_all(b"\n")?;
            }
            Ok(())
        };
        let partial: &serde_json::value::RawValue = match serde_json::from_str(&line) {
            Ok(partial) => partial,
            Err(error) => {
                rejected(format!("invalid JSON: {error}"), Value::Null, &mut out)?;
                continue;
            }
        };
        let given_id = serde_json::from_str::<Value>(partial.get())
            .ok()
            .and_then(|value| value.get("id").cloned())
            .unwrap_or(Value::Null);
        let event = match built.runtime.collector().enrich_json(partial.get()) {
            Ok(mut event) => {
                if let Some(ingest) = &ingest {
                    event.set_ingest(ingest.clone());
                }
                event
            }
            Err(invalid) => {
                rejected(invalid.to_string(), given_id, &mut out)?;
                continue;
            }
        };
        for line in built.runtime.explain(&source, &event) {
            let mut record = Map::new();
            record.insert("event".into(), Value::from(index));
            record.insert("id".into(), Value::from(event.id()));
            record.insert("destination".into(), Value::from(line.destination));
            record.insert("outcome".into(), Value::from(line.explained.outcome.label()));
            if let Some(reason) = line.explained.reason {
                record.insert("reason".into(), Value::from(reason));
            }
            if let Some(wire) = line.explained.wire {
                record.insert("wire".into(), wire);
            }
            out.write_all(&crate::json::to_vec(&record))?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}
