// Issue 16 points 4, 5 and 7: the command line's conventions (`--json` everywhere, a closed
// pipe is success, completions and the manual page, journald and JSON logs), secrets the way
// services are deployed (`*_FILE`, systemd credentials), and the deployment as documented
// (read-only commands never create a database; the shipped unit, cron line and README agree).

use crate::common::cli::*;
use crate::common::{TestEnv, Tuning, ADMIN_CLIENT_SECRET, PACKAGE};
use serde_json::Value;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const PW: &str = "Conv-Password-1";

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// Point 4: a read-only command never creates a database

/// Issue 16 point 4: `status` in a directory without a database used to create an empty one
/// with a new key. Each command that only works on stored data refuses, exit 3, naming the
/// directory it looked in, and leaves nothing behind.
#[test]
fn issue16_commands_on_stored_data_refuse_a_missing_database() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let session = "00000000-0000-4000-8000-000000000000";
    let user_args = ["--user", "alice", "--package", PACKAGE];
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (vec!["status"], "", "`status`"),
        (vec!["--json", "status"], "", "`status`"),
        (vec!["queue"], "", "`queue`"),
        (vec!["metrics"], "", "`metrics`"),
        (vec!["user", "list"], "", "`user list`"),
        (vec!["session", "show", session], "", "`session show`"),
        (vec!["logout", session], "", "`logout`"),
        (vec!["sync-now"], "", "`sync-now`"),
        (vec!["cleanup"], "", "`cleanup`"),
        (
            [&["cached-token"][..], &user_args].concat(),
            "",
            "`cached-token`",
        ),
        (
            [&["user", "disable"][..], &user_args].concat(),
            "",
            "`user disable`",
        ),
        (
            [&["passwd"][..], &user_args].concat(),
            "old-pw\nnew-pw\n",
            "`passwd`",
        ),
    ];
    for (args, stdin, command) in cases {
        let out = kr(&env, &args, stdin).expect(3);
        let line = one_line(&out);
        let dir = env.data_dir();
        assert!(
            line.starts_with(&format!("error: no database in {} ", dir.display())),
            "{args:?}: {line}"
        );
        assert!(line.contains(command), "{args:?}: {line}");
        assert!(
            line.contains(&env.config_path().display().to_string()),
            "{line}"
        );
        assert!(!dir.exists(), "{args:?} created {}", dir.display());
    }
    // The first command of an installation creates it; then they work.
    add_user(&env, "alice", PW);
    kr(&env, &["status"], "").expect(0);
}

// ------------------------------------------------------------------------------------------
// Point 7: --json on every command

/// Issue 16 point 7: `user add|disable|enable|unlock|remove` printed their text line whatever
/// `--json` said.
#[test]
fn issue16_user_commands_have_json_views() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let who = |cmd: &[&'static str]| -> Vec<&'static str> {
        let mut v = cmd.to_vec();
        v.extend_from_slice(&["--user", "Carol", "--package", PACKAGE]);
        v
    };
    let v = kr_json(&env, &who(&["user", "add"]), &format!("{PW}\n"), 0);
    assert_eq!(
        v,
        serde_json::json!({"done": "added", "package": PACKAGE, "success": true, "user": "Carol"})
    );
    for (cmd, done, ended) in [
        ("disable", "disabled", Some(0)),
        ("enable", "enabled", None),
        ("unlock", "unlocked", None),
        ("remove", "removed", Some(0)),
    ] {
        let v = kr_json(&env, &who(&["user", cmd]), "", 0);
        assert_eq!(v["done"], done, "{v}");
        assert_eq!(v["user"], "Carol", "{v}");
        assert_eq!(v["success"], true, "{v}");
        match ended {
            Some(n) => assert_eq!(v["sessions_ended"], n, "{v}"),
            None => assert!(v.get("sessions_ended").is_none(), "{v}"),
        }
    }
    // The text lines are as they were.
    let out = kr(&env, &who(&["user", "add"]), &format!("{PW}\n")).expect(0);
    assert_eq!(out.stdout, format!("added Carol/{PACKAGE}\n"));
    let out = kr(&env, &who(&["user", "disable"]), "").expect(0);
    assert_eq!(
        out.stdout,
        format!("disabled Carol/{PACKAGE} (0 session(s) ended)\n")
    );
}

/// Issue 16 point 7: `start --json` writes one JSON object a line: `started` with the
/// banner's fields, then the loop's events, then `stopped`.
#[test]
fn issue16_start_json_is_one_event_a_line() {
    let (_fake, env) = fake_and_env(&Tuning::default());
    let mut svc = Service::start_with(&env, &["--json"]);
    let first = svc.next_line(Duration::from_secs(15));
    let started: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first:?}"));
    assert_eq!(started["event"], "started", "{started}");
    assert_eq!(started["mode"], "normal", "{started}");
    assert_eq!(started["pending_syncs"], 0, "{started}");
    assert!(started["control_socket"].is_string(), "{started}");
    assert!(is_rfc3339(&started["ts"]), "{started}");
    svc.sigterm();
    let status = svc.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
    assert!(!svc.stdout.is_empty(), "no stopped event");
    for line in &svc.stdout {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(v["event"].is_string(), "{v}");
    }
    let last: Value = serde_json::from_str(svc.stdout.last().unwrap()).unwrap();
    assert_eq!(last["event"], "stopped", "{last}");
}

// ------------------------------------------------------------------------------------------
// Point 7: a closed pipe is success

/// Runs the binary with stdout a pipe whose reading end is already closed: the first write
/// fails with EPIPE, always (no race with a reader).
fn run_into_closed_pipe(env: &TestEnv, args: &[&str]) -> (i32, String) {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("--config")
        .arg(env.config_path())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    let out = cmd.output().expect("run");
    (
        out.status.code().expect("exited"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 16 point 7: `--json user list | head -1` printed "error: Broken pipe" and exited 3:
/// serde_json's error hid the io error from the cause chain `main` looks through.
#[test]
fn issue16_a_closed_pipe_is_success_under_json_too() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    add_user(&env, "alice", PW);
    for args in [
        &["--json", "user", "list"][..],
        &["user", "list"],
        &["--json", "status"],
        &["--json", "queue"],
        &["completions", "bash"],
        &["man"],
    ] {
        let (code, stderr) = run_into_closed_pipe(&env, args);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        assert!(!stderr.contains("error"), "{args:?}: {stderr}");
    }
}

// ------------------------------------------------------------------------------------------
// Point 7: completions and the manual page

/// Issue 16 point 7: completion scripts and the man page come from the clap definition, and
/// need no config file.
#[test]
fn issue16_completions_and_man_page() {
    let nowhere = tempfile::tempdir().unwrap();
    let run_here = |args: &[&str]| {
        let mut c = assert_cmd::Command::new(BIN);
        c.current_dir(nowhere.path()).args(args);
        run(c).expect(0)
    };
    for shell in ["bash", "zsh", "fish"] {
        let out = run_here(&["completions", shell]);
        assert!(!out.stdout.is_empty(), "{shell}");
        for word in ["sync-now", "cached-token", "lock-timeout"] {
            assert!(out.stdout.contains(word), "{shell}: no {word}");
        }
    }
    let mut c = assert_cmd::Command::new(BIN);
    c.current_dir(nowhere.path()).args(["completions", "tcsh"]);
    let out = run(c).expect(2);
    assert!(
        out.stdout.is_empty() && out.stderr.contains("tcsh"),
        "{out:?}"
    );
    // roff: requests only before the title (clap_mangen defines a string first), then `.TH`
    // with the name and section, before any section heading.
    let page = run_here(&["man"]).stdout;
    let first: Vec<&str> = page.lines().take_while(|l| !l.starts_with(".SH")).collect();
    assert!(first.iter().all(|l| l.starts_with('.')), "{first:?}");
    assert!(
        first
            .iter()
            .any(|l| l.starts_with(".TH keycloak-resilient 1 ")),
        "no .TH before the first .SH: {first:?}"
    );
    assert!(page.contains("sync\\-now"), "subcommands missing");
    assert!(!nowhere.path().join("data").exists());
}

// ------------------------------------------------------------------------------------------
// Point 7: journald priorities and JSON logs

/// Runs `status` (which warns: the data directory was made world-readable) with stderr a
/// fresh pipe; `journal` sets JOURNAL_STREAM to that pipe's device and inode, as systemd does
/// for a service's stderr. Returns stderr.
fn warn_into(env: &TestEnv, extra: &[&str], journal: Option<bool>) -> String {
    std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut reader, writer) = std::io::pipe().expect("pipe");
    let meta = std::fs::File::from(writer.as_fd().try_clone_to_owned().unwrap())
        .metadata()
        .unwrap();
    {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--config").arg(env.config_path()).args(extra);
        cmd.arg("status")
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer);
        match journal {
            Some(true) => {
                cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
            }
            Some(false) => {
                cmd.env(
                    "JOURNAL_STREAM",
                    format!("{}:{}", meta.dev(), meta.ino() + 1),
                );
            }
            None => {}
        }
        let status = cmd.status().expect("run");
        assert_eq!(status.code(), Some(0));
    }
    let mut err = String::new();
    reader.read_to_string(&mut err).unwrap();
    err
}

/// Issue 16 point 7: under journald every line carries its priority; `--log-format json` is
/// one object a line with ts, level, target, message.
#[test]
fn issue16_journald_priorities_and_json_logs() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    env.create_database();
    let warning = "was readable by others; set to 0700";
    let plain = warn_into(&env, &[], None);
    assert!(plain.starts_with('[') && plain.contains(warning), "{plain}");
    let journal = warn_into(&env, &[], Some(true));
    assert!(journal.starts_with("<4>WARN "), "{journal}");
    assert!(journal.contains(warning), "{journal}");
    // JOURNAL_STREAM inherited but naming another file: stderr is not the journal.
    let elsewhere = warn_into(&env, &[], Some(false));
    assert!(elsewhere.starts_with('['), "{elsewhere}");
    let json = warn_into(&env, &["--log-format", "json"], None);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 1, "{json}");
    let v: Value = serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {json}"));
    assert_eq!(v["level"], "WARN", "{v}");
    assert!(is_rfc3339(&v["ts"]), "{v}");
    assert!(
        v["target"]
            .as_str()
            .unwrap()
            .starts_with("keycloak_resilient"),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains(warning), "{v}");
    let both = warn_into(&env, &["--log-format", "json"], Some(true));
    assert!(both.starts_with("<4>{\""), "{both}");
    let out = kr(&env, &["--log-format", "xml", "status"], "").expect(2);
    assert!(out.stderr.contains("--log-format"), "{out:?}");
}

// ------------------------------------------------------------------------------------------
// Point 5: secrets from files and systemd credentials

/// Issue 16 point 5: the admin secret from a systemd credential (and from
/// KEYCLOAK_ADMIN_CLIENT_SECRET_FILE), with a trailing newline; `test` proves Keycloak took it.
#[test]
fn issue16_secrets_from_credentials_and_files() {
    let t = Tuning {
        admin_client_secret: "not-the-secret".into(),
        ..Tuning::default()
    };
    let (_fake, env) = fake_and_env(&t);
    kr(&env, &["test"], "").expect(1);
    let creds = tempfile::tempdir().unwrap();
    let cred = creds.path().join("keycloak-admin-client-secret");
    std::fs::write(&cred, format!("{ADMIN_CLIENT_SECRET}\n")).unwrap();
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o400)).unwrap();
    let mut c = env.cmd();
    c.env("CREDENTIALS_DIRECTORY", creds.path()).arg("test");
    run(c).expect(0);
    let mut c = env.cmd();
    c.env("KEYCLOAK_ADMIN_CLIENT_SECRET_FILE", &cred)
        .arg("test");
    run(c).expect(0);
    // Both at once: refused, naming both, exit 2.
    let mut c = env.cmd();
    c.env("CREDENTIALS_DIRECTORY", creds.path())
        .env("KEYCLOAK_ADMIN_CLIENT_SECRET_FILE", &cred)
        .arg("status");
    let out = run(c).expect(2);
    let line = one_line(&out);
    assert!(
        line.contains("KEYCLOAK_ADMIN_CLIENT_SECRET_FILE (")
            && line.contains("credential keycloak-admin-client-secret ("),
        "{line}"
    );
    assert!(!line.contains(ADMIN_CLIENT_SECRET), "{line}");
    // A world-readable secret file: refused, naming it, never quoting it.
    std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = env.cmd();
    c.env("KEYCLOAK_ADMIN_CLIENT_SECRET_FILE", &cred)
        .arg("status");
    let out = run(c).expect(2);
    let line = one_line(&out);
    assert!(line.contains(&cred.display().to_string()), "{line}");
    assert!(line.contains("open to every user (mode 0644)"), "{line}");
    assert!(!line.contains(ADMIN_CLIENT_SECRET), "{line}");
}

// ------------------------------------------------------------------------------------------
// Point 4: the shipped unit, cron job and README agree

fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
        .collect()
}

/// Issue 16 point 4: the unit can write the README's textfile (ProtectSystem=strict needs
/// ReadWritePaths=), the file comes out readable by node_exporter (the umask), and the
/// secrets come as credentials under the names the binary reads.
#[test]
fn issue16_the_unit_can_do_what_the_readme_says() {
    let unit = repo_file("contrib/keycloak-resilient.service");
    let readme = repo_file("README.md");
    let textfile = readme
        .split_whitespace()
        .find(|w| w.ends_with("keycloak_resilient.prom"))
        .map(PathBuf::from)
        .expect("the README names a textfile path");
    let dir = textfile.parent().unwrap().display().to_string();
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    let writable = unit_values(&unit, "ReadWritePaths");
    assert!(
        writable
            .iter()
            .flat_map(|v| v.split_whitespace())
            .any(|p| p.trim_start_matches('-') == dir),
        "{dir} not in ReadWritePaths={writable:?}"
    );
    let umask = unit_values(&unit, "UMask");
    assert_eq!(umask.len(), 1, "{umask:?}");
    let umask = u32::from_str_radix(&umask[0], 8).unwrap();
    assert_eq!(
        umask & 0o044,
        0,
        "the textfile would not be readable by node_exporter"
    );
    let creds = unit_values(&unit, "LoadCredential");
    for name in ["keycloak-client-secret", "keycloak-admin-client-secret"] {
        assert!(
            creds.iter().any(|c| c.starts_with(&format!("{name}:/"))),
            "no LoadCredential={name}:… in {creds:?}"
        );
        assert!(readme.contains(name), "README does not name {name}");
    }
    for var in [
        "KEYCLOAK_CLIENT_SECRET_FILE",
        "KEYCLOAK_ADMIN_CLIENT_SECRET_FILE",
    ] {
        assert!(readme.contains(var), "README does not name {var}");
    }
}

/// Issue 16 point 4: cron's PATH is /usr/bin:/bin; the job calls the binary by its full path
/// and gives it the secrets; the README shows the shipped line, not another one.
#[test]
fn issue16_the_cron_job_finds_the_binary_and_the_secrets() {
    let cron = repo_file("contrib/keycloak-resilient.cron");
    let job = cron
        .lines()
        .find(|l| l.starts_with('*') || l.starts_with(|c: char| c.is_ascii_digit()))
        .expect("a job line");
    let command: Vec<&str> = job.split_whitespace().skip(6).collect();
    let bin = command
        .iter()
        .find(|w| w.ends_with("keycloak-resilient") && !w.starts_with("/var"))
        .expect("the binary");
    assert!(bin.starts_with('/'), "cron's PATH has no {bin}: {job}");
    for var in [
        "KEYCLOAK_CLIENT_SECRET_FILE",
        "KEYCLOAK_ADMIN_CLIENT_SECRET_FILE",
    ] {
        assert!(
            cron.lines().any(|l| l.starts_with(&format!("{var}=/"))),
            "{var} not set in the cron file"
        );
    }
    let readme = repo_file("README.md");
    for line in readme.lines().filter(|l| l.starts_with("*/")) {
        assert!(
            cron.contains(line),
            "README cron line differs from contrib: {line}"
        );
    }
}

/// Issue 16 point 4: an example run as written must not store a placeholder as a password
/// (the old `queue-sync` example queued the literal "…", superseding a real `passwd`).
#[test]
fn issue16_readme_examples_hold_no_placeholder_values() {
    let readme = repo_file("README.md");
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if in_sh && line.contains("keycloak-resilient") {
            assert!(
                !line.contains('…'),
                "placeholder in a shell example: {line}"
            );
            if line.contains("$PASSWORD") || line.contains("$NEW") || line.contains("$OLD") {
                panic!("an unset variable would be sent as an empty password: {line}");
            }
        }
    }
}

/// Issue 16 "done means": `systemd-analyze verify` accepts the shipped unit, on a machine
/// that has it (the binary path pointed at the one under test, which verify checks exists).
#[test]
fn issue16_systemd_analyze_verifies_the_unit() {
    let Ok(found) = std::process::Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
    else {
        return;
    };
    if !found.status.success() {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = repo_file("contrib/keycloak-resilient.service")
        .replace("/usr/local/bin/keycloak-resilient", BIN);
    let path = dir.path().join("keycloak-resilient.service");
    std::fs::write(&path, unit).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("keycloak-resilient"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{stderr}");
}
