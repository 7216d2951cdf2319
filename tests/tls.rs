//! HTTPS on the ingest and admin listeners, with a private CA made here; certificates are
//! read again on reload.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use support::redis::make_certificates;
use support::{Weir, eventually};

/// A client that trusts only the CA in `ca_file`.
fn trusting(ca_file: &Path) -> reqwest::blocking::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca_file).unwrap()).unwrap();
    reqwest::blocking::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn https(base: &str) -> String {
    base.replacen("http://", "https://", 1)
}

#[test]
fn https_on_ingest_and_admin_and_certificates_are_read_again_on_reload() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certificates(certs.path());
    let tls = format!(
        "{{ certFile = \"{}\", keyFile = \"{}\" }}",
        cert.display(),
        key.display()
    );
    let weir = Weir::start(&format!(
        r#"
admin.tls = {tls}
[sources.http]
type = "http"
config.settings.tls = {tls}
[destinations.file]
type = "file"
"#
    ));
    assert!(weir.log().contains(r#"scheme="https""#), "{}", weir.log());
    let ingest = https(&weir.url("/collect"));
    let status = https(&weir.admin_url("/status.json"));
    let first = trusting(&ca);
    let posted = first
        .post(&ingest)
        .body(json!({"name": "page view"}).to_string())
        .send()
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(first.get(&status).send().unwrap().status(), 200);
    assert!(
        support::client().get(weir.url("/healthz")).send().is_err(),
        "plain HTTP to an HTTPS port is refused"
    );
    assert!(eventually(Duration::from_secs(5), || weir
        .json_lines("weir-data/events.jsonl")
        .len()
        == 1));

    // Rotate: a certificate from another CA in the same files, then SIGHUP.
    let rotated = tempfile::tempdir().unwrap();
    let (new_ca, new_cert, new_key) = make_certificates(rotated.path());
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let status_code = std::process::Command::new("kill")
        .args(["-HUP", &weir.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status_code.success());
    assert!(
        eventually(Duration::from_secs(10), || weir.log().contains("flow reloaded")),
        "{}",
        weir.log()
    );
    let second = trusting(&new_ca);
    let posted = second
        .post(&ingest)
        .body(json!({"name": "page view"}).to_string())
        .send()
        .unwrap();
    assert_eq!(posted.status(), 200);
    assert_eq!(second.get(&status).send().unwrap().status(), 200);
    // A fresh client that trusts only the old CA no longer gets in.
    assert!(
        trusting(&ca).get(&status).send().is_err(),
        "the old certificate is gone"
    );
    assert!(trusting(&ca).post(&ingest).body("{}").send().is_err());
}

#[test]
fn a_tls_block_with_bad_files_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert, _) = make_certificates(dir.path());
    let file = dir.path().join("flow.toml");
    std::fs::write(
        &file,
        format!(
            "admin.tls = {{ certFile = \"{}\", keyFile = \"{}\" }}\n[sources.http]\ntype = \"http\"\nconfig.settings.tls = {{ certFile = \"/nonexistent/cert.pem\", keyFile = \"k\" }}\n[destinations.file]\ntype = \"file\"\n",
            cert.display(),
            cert.display()
        ),
    )
    .unwrap();
    let output = std::process::Command::new(support::weir_binary())
        .arg("validate")
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("sources.http.config.settings.tls.certFile: /nonexistent/cert.pem"),
        "{stderr}"
    );
    assert!(
        stderr.contains("admin.tls.keyFile"),
        "a certificate is not a key:\n{stderr}"
    );
}
