//! Test support: runs the real `weir` binary on a free loopback port, in a private
//! directory, and stops it by its PID.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `weir serve`.
pub struct Weir {
    pub child: Child,
    pub base: String,
    /// The admin listener's base URL (status page, /metrics, tap).
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub stderr: Arc<Mutex<String>>,
    /// What it wrote to standard output (the `stdout` and `demo` destinations).
    pub stdout: Arc<Mutex<String>>,
    /// Everything after `serve`, for a restart.
    args: Vec<String>,
    /// Environment variables set for it, for a restart.
    env: Vec<(String, String)>,
    /// Its limit on open files (soft and hard), if not the test's own.
    open_files: Option<u64>,
}

pub fn weir_binary() -> &'static str {
    env!("CARGO_BIN_EXE_weir")
}

impl Weir {
    /// Starts `weir serve` with `config` (TOML) written to `flow.toml` in a fresh directory,
    /// which is also its working directory.
    pub fn start(config: &str) -> Weir {
        Weir::start_with(config, &[])
    }

    pub fn start_with(config: &str, extra_args: &[&str]) -> Weir {
        Weir::start_file("flow.toml", config, extra_args)
    }

    /// Starts `weir serve` with `config` written to `file` (its extension says the format).
    pub fn start_file(file: &str, config: &str, extra_args: &[&str]) -> Weir {
        Weir::start_env(file, config, extra_args, &[])
    }

    /// [`start`](Self::start) with at most `limit` open files (`ulimit -n`, soft and hard).
    pub fn start_with_open_files(config: &str, limit: u64) -> Weir {
        Weir::start_limited("flow.toml", config, &[], &[], Some(limit))
    }

    /// [`start_file`](Self::start_file) with environment variables set.
    pub fn start_env(file: &str, config: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Weir {
        Weir::start_limited(file, config, extra_args, env, None)
    }

    fn start_limited(
        file: &str,
        config: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
        open_files: Option<u64>,
    ) -> Weir {
        let dir = tempfile::tempdir().unwrap();
        let config = config.replace("{dir}", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join(file), config).unwrap();
        let mut args: Vec<String> = ["--config", file, "--listen", "127.0.0.1:0"]
            .into_iter()
            .map(String::from)
            .collect();
        if !extra_args.contains(&"--admin-listen") {
            args.extend(["--admin-listen".to_owned(), "127.0.0.1:0".to_owned()]);
        }
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, base, admin) = launch(dir.path(), &args, &env, open_files, &log, &stdout);
        Weir {
            child,
            base,
            admin,
            dir,
            stderr: log,
            stdout,
            args,
            env,
            open_files,
        }
    }

    /// What it wrote to standard output so far.
    pub fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// SIGKILL: no shutdown, no last cursor save.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts weir again in the same directory with the same flow (on a new port: `base`
    /// changes); its log goes on in the same buffer.
    pub fn restart(&mut self) {
        assert!(self.child.try_wait().unwrap().is_some(), "restart a stopped weir only");
        self.stderr.lock().unwrap().push_str("--- restart ---\n");
        let (child, base, admin) = launch(
            self.dir.path(),
            &self.args,
            &self.env,
            self.open_files,
            &self.stderr,
            &self.stdout,
        );
        self.child = child;
        self.base = base;
        self.admin = admin;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{path}", self.admin)
    }

    /// The Prometheus text on the admin listener.
    pub fn metrics(&self) -> String {
        client().get(self.admin_url("/metrics")).send().unwrap().text().unwrap()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// JSON lines of a file in weir's directory (empty when missing).
    pub fn json_lines(&self, name: &str) -> Vec<serde_json::Value> {
        read_json_lines(&self.path(name))
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for the process to exit (at most `limit`).
    pub fn terminate(&mut self, limit: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("weir did not exit within {limit:?} of SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `weir serve <args>` in `dir`, collecting its log into `log`; returns the process, the
/// base URL of its first listener and of its admin listener once it listens.
fn launch(
    dir: &Path,
    args: &[String],
    env: &[(String, String)],
    open_files: Option<u64>,
    log: &Arc<Mutex<String>>,
    output: &Arc<Mutex<String>>,
) -> (Child, String, String) {
    let mut command = Command::new(weir_binary());
    if let Some(limit) = open_files {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
    }
    let mut child = command
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let written = output.clone();
    std::thread::spawn(move || {
        let mut stdout = stdout;
        let mut buffer = [0u8; 8192];
        while let Ok(read @ 1..) = std::io::Read::read(&mut stdout, &mut buffer) {
            written
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
    });
    let stderr = child.stderr.take().unwrap();
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    let (admin_tx, admin_rx) = std::sync::mpsc::channel();
    let collected = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("admin listening")
                && let Some(address) = line.split("address=").nth(1)
            {
                let _ = admin_tx.send(strip_ansi(address).trim().to_owned());
            }
            // The first listener: an HTTP source's, or in a flow without one, the
            // process's own (health, metrics, SSE).
            if (line.contains("HTTP source listening") || line.contains("HTTP endpoints listening"))
                && let Some(address) = line.split("address=").nth(1)
            {
                let _ = address_tx.send(strip_ansi(address).trim().to_owned());
            }
            let mut text = collected.lock().unwrap();
            text.push_str(&strip_ansi(&line));
            text.push('\n');
        }
    });
    // The admin listener is bound (and logged) before the others.
    match address_rx.recv_timeout(Duration::from_secs(20)) {
        Ok(address) => {
            let admin = admin_rx
                .try_recv()
                .map(|admin| format!("http://{admin}"))
                .unwrap_or_default();
            (child, format!("http://{address}"), admin)
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir did not start:\n{}", log.lock().unwrap());
        }
    }
}

pub fn read_json_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}")))
        .collect()
}

/// Polls `check` until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// HMAC-SHA256 of `data` under the hex `key`, in hex, as Python's standard library computes
/// it: an implementation independent of weir's, for checking its signatures.
pub fn python_hmac(key_hex: &str, data: &str) -> String {
    let output = Command::new("python3")
        .args([
            "-c",
            "import hmac,hashlib,sys; print(hmac.new(bytes.fromhex(sys.argv[1]), sys.argv[2].encode(), hashlib.sha256).hexdigest())",
            key_hex,
            data,
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Debian's chromium, which scripts/test.sh installs.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium as the tests run it: no GPU, no network of its own (QUIC, updates, sync), no
/// first-run pages.
pub const CHROMIUM_FLAGS: [&str; 6] = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Opens `page` in headless Chromium, lets its scripts run (10 s of virtual time) and returns
/// the DOM it ends with, and what Chromium said on standard error.
pub fn chromium_dump_dom(page: &Path) -> (String, String) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: scripts/test.sh installs it (Debian package chromium)"
    );
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox"])
        .args(CHROMIUM_FLAGS)
        .args(["--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A blocking HTTP client for the tests.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub mod kafka;
pub mod pki;
pub mod recorder;
pub mod redis;

/// `base` (an object) with the keys of `extra` (an object) added or replaced.
pub fn merged(mut base: serde_json::Value, extra: &serde_json::Value) -> serde_json::Value {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
    base
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// walkerOS's destination and mapping test vectors.
pub fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("../vectors/walkeros-destinations-and-mapping.json")).unwrap()
}

/// POSTs `body` as JSON to weir's `/collect`.
pub fn post(weir: &Weir, body: &serde_json::Value) -> reqwest::blocking::Response {
    client()
        .post(weir.url("/collect"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap()
}

/// Runs `weir explain` with `flow_text` on one event; the JSON record it prints.
pub fn explain(flow_text: &str, event: &serde_json::Value) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flow.toml"), flow_text).unwrap();
    std::fs::write(dir.path().join("events.jsonl"), event.to_string()).unwrap();
    let output = Command::new(weir_binary())
        .args(["explain", "--config", "flow.toml", "events.jsonl"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `weir explain` with `flow` (JSON) on `events`, in order, in one run; the records it
/// prints.
pub fn explain_events(flow: &serde_json::Value, events: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("flow.json"), flow.to_string()).unwrap();
    let lines: Vec<String> = events.iter().map(serde_json::Value::to_string).collect();
    std::fs::write(dir.path().join("events.jsonl"), lines.join("\n")).unwrap();
    let output = Command::new(weir_binary())
        .args(["explain", "--config", "flow.json", "events.jsonl"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "explain failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// POSTs `body` (JSON) to `url` as a real client would: a 503 is retried after 100 ms, for at
/// most two minutes. The final status and how many 503s came before it.
pub fn post_retrying_unavailable(http: &reqwest::blocking::Client, url: &str, body: &str) -> (u16, usize) {
    let started = Instant::now();
    let mut unavailable = 0;
    loop {
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .unwrap();
        match response.status().as_u16() {
            503 => {
                unavailable += 1;
                assert!(started.elapsed() < Duration::from_secs(120), "503 for two minutes");
                std::thread::sleep(Duration::from_millis(100));
            }
            status => return (status, unavailable),
        }
    }
}
