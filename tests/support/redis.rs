//! A private redis-server for a test, on a free loopback port, stopped (by PID) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    /// Password for the default user, if the server requires one.
    pub password: Option<String>,
    /// TLS: the CA certificate clients trust.
    pub ca_file: Option<PathBuf>,
}

use super::free_port;

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (`["--appendonly", "yes"]`...).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let password = args
            .iter()
            .position(|a| a == "--requirepass")
            .map(|i| args[i + 1].clone());
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            args,
            password,
            ca_file: None,
        };
        server.launch_on_free_port();
        server
    }

    /// A TLS-only server with a self-signed CA and server certificate made here.
    pub fn start_tls(extra: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let (ca_file, cert_file, key_file) = make_certificates(dir.path());
        let mut args: Vec<String> = vec![
            "--tls-cert-file".into(),
            cert_file.display().to_string(),
            "--tls-key-file".into(),
            key_file.display().to_string(),
            "--tls-ca-cert-file".into(),
            ca_file.display().to_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = RedisServer {
            child: None,
            port: 0,
            dir,
            args,
            password: None,
            ca_file: Some(ca_file),
        };
        server.launch_on_free_port();
        server
    }

    fn launch_on_free_port(&mut self) {
        for _ in 0..5 {
            self.port = free_port();
            if self.launch() {
                return;
            }
        }
        panic!("redis-server did not start (is it installed? scripts/test.sh installs it)");
    }

    /// Starts redis-server on `self.port`; false when it exited (port taken).
    fn launch(&mut self) -> bool {
        let port = self.port.to_string();
        let tls = self.ca_file.is_some();
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--protected-mode", "no", "--save", "", "--dir"])
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"]);
        if tls {
            command.args(["--port", "0", "--tls-port", &port]);
        } else {
            command.args(["--port", &port]);
        }
        if !self.args.iter().any(|a| a == "--appendonly") {
            command.args(["--appendonly", "no"]);
        }
        command.args(&self.args);
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().unwrap().is_some()
            {
                self.child = None;
                return false;
            }
            if self.cli(&["PING"]).trim() == "PONG" {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// `redis://127.0.0.1:<port>` (with the password when there is one).
    pub fn url(&self) -> String {
        let scheme = if self.ca_file.is_some() { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}", self.port),
            None => format!("{scheme}://127.0.0.1:{}", self.port),
        }
    }

    /// Runs redis-cli against the server; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.password {
            command.env("REDISCLI_AUTH", password);
        }
        if let Some(ca) = &self.ca_file {
            command.arg("--tls").arg("--cacert").arg(ca);
        }
        let output = command.args(args).output().expect("cannot run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// How many entries `group` has pending on `stream` (XPENDING's summary); `u64::MAX` when
    /// the group does not exist.
    pub fn pending(&self, stream: &str, group: &str) -> u64 {
        let summary = self.cli(&["XPENDING", stream, group]);
        summary.lines().next().unwrap_or("").trim().parse().unwrap_or(u64::MAX)
    }

    /// A synchronous client for checking what landed.
    pub fn client(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).unwrap();
        client.get_connection().unwrap()
    }

    /// Every entry of `stream`: (id, fields in order).
    pub fn xrange(&self, stream: &str) -> Vec<(String, Vec<(String, String)>)> {
        let reply: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query(&mut self.client())
            .unwrap();
        reply
            .into_iter()
            .map(|(id, flat)| {
                let fields = flat.chunks(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
                (id, fields)
            })
            .collect()
    }

    /// SIGKILL: no shutdown, no final fsync.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory (its data reloads from disk).
    pub fn restart(&mut self) {
        assert!(self.launch(), "redis-server did not come back on port {}", self.port);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA and a server certificate for 127.0.0.1, written as PEM files into `dir`.
pub fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let pki = super::pki::Pki::make(dir, "weir test CA");
    (pki.ca, pki.server_cert, pki.server_key)
}

/// Three redis-server masters joined into a cluster on loopback ports.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]))
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("cannot run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            {
                return RedisCluster { nodes };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the cluster did not reach cluster_state:ok");
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Runs redis-cli in cluster mode (follows redirects) against the first node.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-c", "-h", "127.0.0.1", "-p", &self.nodes[0].port.to_string()])
            .args(args)
            .output()
            .expect("cannot run redis-cli");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Which node (index) holds `key`.
    pub fn owner(&self, key: &str) -> usize {
        let slot: u16 = self.nodes[0].cli(&["CLUSTER", "KEYSLOT", key]).trim().parse().unwrap();
        let slots = self.nodes[0].cli(&["CLUSTER", "SLOTS"]);
        // redis-cli prints each range as: start, end, then the owner's ip and port.
        let lines: Vec<&str> = slots.lines().map(str::trim).collect();
        for window in lines.windows(4) {
            if let (Ok(start), Ok(end)) = (window[0].parse::<u16>(), window[1].parse::<u16>())
                && (start..=end).contains(&slot)
                && let Ok(port) = window[3].parse::<u16>()
                && let Some(index) = self.nodes.iter().position(|n| n.port == port)
            {
                return index;
            }
        }
        panic!("no owner for slot {slot} in:\n{slots}");
    }
}
