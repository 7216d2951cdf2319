//! The `weir` command line: `serve`, `validate`, `explain`, `dlq`, `journal`, `streams`,
//! `doctor`.
//!
//! Each subcommand is a thin edge over the library; errors become a message on stderr and a
//! non-zero exit status here, and nowhere else.

mod dlq;
mod explain;
mod serve;
mod streams;
mod tap;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{ConfigErrors, Flow, load_flow};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Server-side event router: walkerOS-compatible ingest, mapping and delivery"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a flow: HTTP ingest into its destinations. With no --config, runs the embedded
    /// default: HTTP on 127.0.0.1:8080 into weir-data/events.jsonl.
    Serve {
        /// Flow file (TOML, YAML or JSON).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Which flow of a walkerOS file with several.
        #[arg(long)]
        flow: Option<String>,
        /// Listen address of the first HTTP source (in a flow without one, of the first
        /// listener, e.g. an SSE hub's), e.g. 127.0.0.1:0.
        #[arg(long)]
        listen: Option<String>,
        /// Listen address of the admin listener (status page, /metrics, tap), replacing
        /// `admin.listen`; `off` for none.
        #[arg(long, env = "WEIR_ADMIN_LISTEN")]
        admin_listen: Option<String>,
        /// Reload the flow when the flow file changes (checked every second), as on SIGHUP.
        #[arg(long)]
        watch: bool,
        /// Seconds to deliver what is queued after SIGTERM/SIGINT; then journaled events stay
        /// in the journal for the next start and the rest are dead-lettered.
        #[arg(long, default_value_t = 10)]
        shutdown_timeout: u64,
        /// Log lines as text (coloured only on a terminal) or JSON, one object per line.
        #[arg(long, env = "WEIR_LOG_FORMAT", value_enum, default_value_t)]
        log_format: crate::telemetry::LogFormat,
    },
    /// Check a flow file; prints every problem with its path and exits 1 if there are any.
    Validate {
        file: PathBuf,
        #[arg(long)]
        flow: Option<String>,
    },
    /// Show what the flow would do with events, without connecting to anything: one JSON
    /// line per event and destination, with the wire form.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        flow: Option<String>,
        /// The source the events come from (default: the flow's first source).
        #[arg(long)]
        source: Option<String>,
        /// The request ingest the events came with, as a JSON object (what the source's
        /// `ingest` mapping makes of a request), for mappings that read `ingest.*`.
        #[arg(long)]
        ingest: Option<String>,
        /// JSON-lines file of events; `-` or nothing reads stdin.
        events: Option<PathBuf>,
    },
    /// Events as they pass a running weir: each destination's outcome and the wire form
    /// sent, read from its admin listener.
    Tap(tap::TapArgs),
    /// The dead-letter file: list, show, replay into the journal, purge.
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// The journal: status (lag per destination).
    Journal {
        #[command(subcommand)]
        command: dlq::JournalCommand,
    },
    /// Redis Streams operations: provision, verify, status, dead letters, gc.
    Streams {
        #[command(subcommand)]
        command: streams::StreamsCommand,
    },
    /// Is this Redis fit to carry streams that must not lose entries? One verdict per line;
    /// exit 0 (all OK), 1 (a WARN), 2 (a FAIL), 3 (cannot connect).
    Doctor {
        #[command(flatten)]
        redis: streams::RedisArgs,
    },
}

/// Runs the command line; the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            flow,
            listen,
            admin_listen,
            watch,
            shutdown_timeout,
            log_format,
        } => {
            crate::telemetry::init_logging(log_format);
            let flow_name = flow.clone();
            let flow = match &config {
                Some(path) => match load(path, flow.as_deref()) {
                    Ok(flow) => flow,
                    Err(code) => return code,
                },
                None => crate::assembly::embedded_default(),
            };
            let options = serve::ServeOptions {
                config: config.clone().map(|path| (path, flow_name.clone())),
                watch,
                listen,
                admin_listen,
                shutdown_timeout: std::time::Duration::from_secs(shutdown_timeout),
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("cannot start the async runtime");
            match runtime.block_on(serve::serve(flow, options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("weir: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { file, flow } => {
            let flow = match load(&file, flow.as_deref()) {
                Ok(flow) => flow,
                Err(code) => return code,
            };
            match crate::assembly::build_flow(&flow) {
                Ok(built) => {
                    for warning in &built.warnings {
                        println!("warning: {warning}");
                    }
                    println!(
                        "{}: ok ({} sources, {} destinations)",
                        file.display(),
                        built.sources.len(),
                        built.runtime.routes().len()
                    );
                    ExitCode::SUCCESS
                }
                Err(errors) => report(&file, &errors),
            }
        }
        Command::Tap(args) => match tap::tap(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("weir tap: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Dlq { command } => dlq::dlq(command),
        Command::Journal { command } => dlq::journal(command),
        Command::Streams { command } => streams::streams(command),
        Command::Doctor { redis } => streams::doctor(&redis),
        Command::Explain {
            config,
            flow,
            source,
            ingest,
            events,
        } => {
            let flow = match load(&config, flow.as_deref()) {
                Ok(flow) => flow,
                Err(code) => return code,
            };
            match explain::explain(&flow, source.as_deref(), ingest.as_deref(), events.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("weir explain: {error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load(path: &std::path::Path, flow: Option<&str>) -> Result<Flow, ExitCode> {
    load_flow(path, flow).map_err(|errors| report(path, &errors))
}

fn report(path: &std::path::Path, errors: &ConfigErrors) -> ExitCode {
    eprintln!("{}: {} problem(s)", path.display(), errors.len());
    for error in errors.iter() {
        eprintln!("  {error}");
    }
    for warning in &errors.warnings {
        eprintln!("warning: {warning}");
    }
    ExitCode::FAILURE
}
