//! Issue 16 point 6: TLS toward Keycloak with a private CA. A test CA and a server
//! certificate for 127.0.0.1 are made in the test (the `openssl` command), and `openssl
//! s_server -WWW` serves the realm's discovery document over TLS: without
//! `keycloak.tls.ca_file` the certificate is refused as a configuration problem (shown by
//! `status` and `test`, the circuit stays closed); with it Keycloak is available; a file that
//! holds no certificate is a config error naming the key.
//!
//! `cargo test --test it tls::`

use crate::common::cli::{kr, kr_json, one_line};
use crate::common::{TestEnv, Tuning};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (on this machine and CI's)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA, and a certificate for 127.0.0.1 it signed: (ca.pem, server cert, server key).
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let subj = |cn: &str| format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            &subj("keycloak-resilient test CA"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            &subj("127.0.0.1"),
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    (dir.join("ca.pem"), dir.join("srv.pem"), dir.join("srv.key"))
}

/// `openssl s_server -WWW` serving the realm's discovery document on a free port; killed on drop.
struct TlsServer {
    child: Child,
    port: u16,
}

impl TlsServer {
    fn start(dir: &Path, cert: &Path, key: &Path) -> TlsServer {
        let www = dir.join("www");
        let known = www.join("realms/resilient-test/.well-known");
        std::fs::create_dir_all(&known).unwrap();
        std::fs::write(
            known.join("openid-configuration"),
            r#"{"issuer": "https://127.0.0.1/realms/resilient-test"}"#,
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-WWW",
                "-accept",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .current_dir(&www)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s_server never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsServer { child, port }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn with_ca(ca: &Path) -> Tuning {
    Tuning {
        failure_threshold: 1,
        keycloak_extra: format!("  tls:\n    ca_file: {}\n", ca.display()),
        ..Tuning::default()
    }
}

#[test]
fn a_private_ca_is_trusted_with_ca_file_and_a_certificate_error_is_a_misconfiguration() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_ca(dir.path());
    let server = TlsServer::start(dir.path(), &cert, &key);

    // Without the CA: refused as our configuration, named, and never an outage.
    let plain = Tuning {
        failure_threshold: 1,
        ..Tuning::default()
    };
    let env = TestEnv::new(&server.url(), &plain);
    env.create_database();
    for _ in 0..3 {
        let s = kr_json(&env, &["status"], "", 0);
        assert_eq!(s["available"], false, "{s}");
        let reason = s["unavailable_reason"].as_str().unwrap_or_default();
        assert!(reason.contains("keycloak.tls.ca_file"), "{s}");
        assert_eq!(s["circuit_state"], "closed", "not an outage: {s}");
    }
    let test = kr(&env, &["test"], "").expect(1);
    assert!(test.stdout.contains("keycloak.tls.ca_file"), "{test:?}");

    // With it: Keycloak (the discovery document) is reached.
    let env = TestEnv::new(&server.url(), &with_ca(&ca));
    env.create_database();
    let s = kr_json(&env, &["status"], "", 0);
    assert_eq!(s["available"], true, "{s}");

    // A file with no certificate in it: a config error naming the key and the file.
    let env = TestEnv::new(&server.url(), &with_ca(&key));
    let out = kr(&env, &["status"], "").expect(2);
    let line = one_line(&out);
    assert!(
        line.contains("keycloak.tls.ca_file") && line.contains("srv.key"),
        "{line}"
    );
    let env = TestEnv::new(&server.url(), &with_ca(&dir.path().join("missing.pem")));
    let out = kr(&env, &["status"], "").expect(2);
    assert!(one_line(&out).contains("missing.pem"), "{out:?}");
}
