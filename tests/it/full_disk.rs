//! Issue 15 point 4: a full disk needs no restart. On a real small filesystem (a tmpfs
//! mounted over the data directory; needs root, as CI has), the service's writes fail with
//! one line while the disk is full, and work again by themselves once space is freed, with
//! every change acknowledged before still there.
//!
//! `cargo test --test it full_disk::`

use crate::common::cli::{fake_and_env, kr_json, try_call, Service};
use crate::common::fake_keycloak::Behavior;
use crate::common::{Tuning, PACKAGE};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A tmpfs mounted over a directory for the test's length.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(dir: &Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mounted(dir.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn queue_sync(i: usize) -> Value {
    json!({"op": "queue-sync", "user": format!("full{i}"), "package": PACKAGE,
        "type": "password_change", "data": {"new_password": format!("Full-Disk-Pw-{i}")}})
}

/// Fills `dir`'s filesystem to the last byte; returns the filler file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last partial chunk: byte by byte is too slow, 4 KiB is enough.
    while f.write_all(&chunk[..4096]).is_ok() {}
    path
}

#[test]
fn writes_work_again_by_themselves_once_space_is_freed() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to mount a small tmpfs (CI runs as root)");
        return;
    }
    let (fake, env) = fake_and_env(&Tuning::default());
    fake.set_behavior(Behavior::Refuse);
    let Some(_mounted) = Mounted::tmpfs(&env.data_dir(), "8m") else {
        panic!("mount -t tmpfs failed although running as root");
    };
    let mut svc = Service::start(&env);
    svc.wait_for("stop with Ctrl-C or SIGTERM", Duration::from_secs(20));

    let mut acknowledged = Vec::new();
    let mut i = 0;
    let filler = fill(&env.data_dir());
    let failure = loop {
        assert!(i < 5000, "the full disk never showed");
        let a = try_call(&env, &queue_sync(i)).expect("the service answers while the disk is full");
        i += 1;
        if a["exit"] == json!(0) {
            acknowledged.push(a["result"]["sync_id"].as_str().unwrap().to_string());
        } else {
            break a;
        }
    };
    assert_eq!(failure["exit"], json!(3), "{failure}");
    let err = failure["stderr"].as_str().unwrap().trim_end();
    assert!(
        !err.contains('\n') && err.contains("free some space"),
        "{err}"
    );

    // Space freed: within a bound, a write goes through again, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "writes never worked again");
        match try_call(&env, &queue_sync(i)) {
            Some(a) if a["exit"] == json!(0) => {
                acknowledged.push(a["result"]["sync_id"].as_str().unwrap().to_string());
                break;
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    assert!(
        svc.child.try_wait().unwrap().is_none(),
        "no restart: the same process"
    );
    let page = kr_json(&env, &["queue", "--limit", "10000"], "", 0);
    let listed: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["sync_id"].as_str())
        .collect();
    for id in &acknowledged {
        assert!(listed.contains(&id.as_str()), "acknowledged {id} lost");
    }
    svc.sigterm();
    assert_eq!(svc.wait_exit(Duration::from_secs(30)).code(), Some(0));
}
