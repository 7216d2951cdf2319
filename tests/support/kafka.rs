//! A private Kafka-protocol broker for a test (tansu, installed by scripts/test.sh), on a free
//! loopback port, stopped by PID when dropped; and a plain librdkafka consumer to read back
//! what weir produced.
//!
//! tansu's limits, worked around here: topics are not created by producing (create them
//! first: [`KafkaBroker::create_topic`]); on `memory://` the high watermark it reports is wrong,
//! so records are read from the earliest offset until the expected count arrived.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::{Offset, TopicPartitionList};

use super::free_port;

/// Where scripts/test.sh puts its tools.
fn tools_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    std::env::var_os("WEIR_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache.join("weir-tools"))
}

/// The tansu binary: `WEIR_TANSU`, else scripts/test.sh's install.
pub fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_TANSU") {
        return PathBuf::from(path);
    }
    let installed = tools_dir().join("tansu-0.6.0/bin/tansu");
    assert!(
        installed.is_file(),
        "tansu is not installed at {}: run scripts/test.sh, which installs it",
        installed.display()
    );
    installed
}

/// Python with confluent-kafka: `WEIR_PYTHON`, else scripts/test.sh's virtualenv.
pub fn python_with_confluent_kafka() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_PYTHON") {
        return PathBuf::from(path);
    }
    let installed = tools_dir().join("python-kafka/bin/python");
    assert!(
        installed.is_file(),
        "Python with confluent-kafka is not at {}: run scripts/test.sh, which installs it",
        installed.display()
    );
    installed
}

/// One record as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
    pub timestamp: Option<i64>,
}

pub struct KafkaBroker {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    storage: String,
    extra: Vec<String>,
    /// SASL for the test's own clients: (mechanism, username, password).
    pub sasl: Option<(String, String, String)>,
    /// TLS in front of it, if started with [`KafkaBroker::start_tls`].
    tls: Option<Terminator>,
}

/// TLS in front of a broker: stunnel (Debian's `stunnel4`, installed by scripts/test.sh) on a
/// port of its own, requiring a client certificate of the test's CA. tansu advertises that
/// port, so every connection a client makes after the bootstrap goes through it too.
struct Terminator {
    child: Option<Child>,
    port: u16,
    ca: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl KafkaBroker {
    /// A broker keeping everything in memory.
    pub fn start() -> KafkaBroker {
        KafkaBroker::start_on(free_port())
    }

    /// A memory broker on a given port.
    pub fn start_on(port: u16) -> KafkaBroker {
        KafkaBroker::launch_new(port, |_| "memory://tansu/".to_owned(), &[])
    }

    /// A broker reached only over TLS with a client certificate of `pki`'s CA, through
    /// stunnel on [`KafkaBroker::bootstrap`]; tansu itself listens on a loopback port that
    /// only stunnel uses. It stores in SQLite, so that users and topics survive
    /// [`KafkaBroker::restart_with_authentication`].
    pub fn start_tls(pki: &super::pki::Pki) -> KafkaBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = KafkaBroker {
            child: None,
            port: free_port(),
            storage: "sqlite://tansu.db".to_owned(),
            dir,
            extra: Vec::new(),
            sasl: None,
            tls: Some(Terminator {
                child: None,
                port: free_port(),
                ca: pki.ca.clone(),
                client_cert: pki.client_cert.clone(),
                client_key: pki.client_key.clone(),
            }),
        };
        let config = format!(
            "foreground = yes\npid =\ndebug = notice\noutput = {dir}/stunnel.log\n[kafka]\naccept = 127.0.0.1:{tls}\n\
             connect = 127.0.0.1:{plain}\ncert = {cert}\nkey = {key}\nCAfile = {ca}\nrequireCert = yes\nverifyChain = yes\n",
            dir = broker.dir.path().display(),
            tls = broker.tls.as_ref().unwrap().port,
            plain = broker.port,
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            ca = pki.ca.display(),
        );
        std::fs::write(broker.dir.path().join("stunnel.conf"), config).unwrap();
        broker.launch();
        let child = Command::new("stunnel")
            .arg(broker.dir.path().join("stunnel.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run stunnel (scripts/test.sh installs Debian's stunnel4)");
        let tls = broker.tls.as_mut().unwrap();
        tls.child = Some(child);
        let port = tls.port;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "stunnel did not listen on {port}:\n{}",
                std::fs::read_to_string(broker.dir.path().join("stunnel.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    /// A broker storing in SQLite in its directory: data and offsets survive a restart.
    pub fn start_sqlite(extra: &[&str]) -> KafkaBroker {
        // tansu reads the path relative to its working directory, which is `dir`.
        KafkaBroker::launch_new(free_port(), |_| "sqlite://tansu.db".to_owned(), extra)
    }

    fn launch_new(port: u16, storage: impl Fn(&std::path::Path) -> String, extra: &[&str]) -> KafkaBroker {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = KafkaBroker {
            child: None,
            port,
            storage: storage(dir.path()),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            sasl: None,
            tls: None,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!(
            "tcp://127.0.0.1:{}",
            self.tls.as_ref().map_or(self.port, |tls| tls.port)
        );
        let log = std::fs::File::create(self.dir.path().join("tansu.log")).unwrap();
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .args(["--storage-engine", &self.storage])
            .args(&self.extra)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot run tansu (scripts/test.sh installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait().unwrap()
            {
                panic!("tansu exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tansu on port {} did not listen:\n{}", self.port, self.log());
    }

    /// Where clients bootstrap: the broker, or with TLS, stunnel in front of it.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.tls.as_ref().map_or(self.port, |tls| tls.port))
    }

    /// What stunnel logged (handshakes refused, clients without certificates).
    pub fn tls_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stunnel.log")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }

    /// Stops the broker (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Restarts it requiring SCRAM authentication; the test's clients log in as `user`
    /// (created before with [`KafkaBroker::create_user`]).
    pub fn restart_with_authentication(&mut self, mechanism: &str, user: &str, password: &str) {
        self.extra.push("--authentication".to_owned());
        self.sasl = Some((mechanism.to_owned(), user.to_owned(), password.to_owned()));
        self.restart();
    }

    /// `tansu user create` (SCRAM-SHA-256 or -512) against this broker.
    pub fn create_user(&self, mechanism: &str, user: &str, password: &str) {
        let mechanism = match mechanism {
            "SCRAM-SHA-256" => "scram256",
            "SCRAM-SHA-512" => "scram512",
            other => panic!("tansu has no {other} users"),
        };
        let output = Command::new(tansu_binary())
            .args(["user", "create", "--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .args(["--mechanism", mechanism, user, password])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    }

    fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.bootstrap());
        if let Some((mechanism, user, password)) = &self.sasl {
            config
                .set("security.protocol", "sasl_plaintext")
                .set("sasl.mechanism", mechanism)
                .set("sasl.username", user)
                .set("sasl.password", password);
        }
        if let Some(tls) = &self.tls {
            let protocol = if self.sasl.is_some() { "sasl_ssl" } else { "ssl" };
            config
                .set("security.protocol", protocol)
                .set("ssl.ca.location", tls.ca.display().to_string())
                .set("ssl.certificate.location", tls.client_cert.display().to_string())
                .set("ssl.key.location", tls.client_key.display().to_string());
        }
        config
    }

    /// Creates a topic with `partitions` partitions (tansu does not create them on produce).
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = runtime
            .block_on(admin.create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            ))
            .unwrap();
        for result in results {
            if let Err((name, code)) = result {
                assert_eq!(
                    code,
                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    "creating {name}"
                );
            }
        }
    }

    /// Reads `topic` from the earliest offset of every partition until `count` records
    /// arrived or `within` passed, then on until nothing more comes for a second (so that
    /// duplicates show); sorted by partition and offset.
    pub fn consume(&self, topic: &str, count: usize, within: Duration) -> Vec<Record> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", format!("weir-test-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
        let mut assignment = TopicPartitionList::new();
        for partition in metadata.topics()[0].partitions() {
            assignment
                .add_partition_offset(topic, partition.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let mut records = Vec::new();
        let deadline = Instant::now() + within;
        let mut quiet_since = None;
        while Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                if records.len() >= count {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(1) {
                        break;
                    }
                }
                continue;
            };
            quiet_since = None;
            // librdkafka reports transient client states (all brokers down while a restarted
            // broker comes back) as errors on the poll: the records are what counts.
            let message = match message {
                Ok(message) => message,
                Err(error) => {
                    eprintln!("consumer: {error}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let headers = message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                partition: message.partition(),
                offset: message.offset(),
                key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                value: String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
                headers,
                timestamp: message.timestamp().to_millis(),
            });
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        records
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut child) = self.tls.as_mut().and_then(|tls| tls.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
