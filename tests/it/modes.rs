// Issue 15 point 3, "files rely on the directory alone": what the tool creates is private
// whatever the umask, the metrics textfile is 0644 and never writable by others, and a data
// directory belonging to another user is refused rather than chmod-ed. The umask is
// process-wide and the tests run on parallel threads, so it is set in the child alone: the
// binary runs under `sh -c 'umask 000; exec …'`.

use crate::common::cli::*;
use crate::common::{TestEnv, Tuning};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// The binary under `umask 000`, with the env's config and a clean environment.
fn under_umask_000(env: &TestEnv, args: &[&str], stdin: &str) -> Out {
    let mut c = assert_cmd::Command::new("sh");
    c.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(BIN)
        .arg("--config")
        .arg(env.config_path())
        .args(args);
    crate::common::clean_env(&mut c).write_stdin(stdin.to_string());
    run(c)
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

/// Every path under `dir` (itself included) whose mode is not 0600 (files) or 0700 (dirs).
fn wide_paths(dir: &Path) -> Vec<String> {
    let mut wide = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if mode(&d) != 0o700 {
            wide.push(format!("{} {:o}", d.display(), mode(&d)));
        }
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("dir entry").path();
            let kind = std::fs::symlink_metadata(&p).expect("stat").file_type();
            if kind.is_dir() {
                todo.push(p);
            } else if mode(&p) != 0o600 {
                wide.push(format!("{} {:o}", p.display(), mode(&p)));
            }
        }
    }
    wide
}

#[test]
fn under_umask_000_every_file_is_private_and_the_textfile_is_0644() {
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let add = |user: &str| {
        under_umask_000(&env, &args(&["user", "add"], user), "A-Password-1\n").expect(0);
    };
    // The first creates the database, the second writes into an existing one.
    add("ann");
    add("ben");
    let data = env.data_dir();
    let names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n == "db") && names.iter().any(|n| n == "conf"),
        "{names:?}"
    );
    assert_eq!(wide_paths(&data), Vec::<String>::new());

    let prom = env.dir.path().join("kr.prom");
    under_umask_000(&env, &["metrics", "--textfile", prom.to_str().unwrap()], "").expect(0);
    assert_eq!(mode(&prom), 0o644);
    assert_eq!(wide_paths(&data), Vec::<String>::new());

    // A directory made by hand with a wide mode is narrowed, with the files sled adds.
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    std::fs::create_dir(env.data_dir()).unwrap();
    std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    under_umask_000(&env, &args(&["user", "add"], "cy"), "A-Password-1\n").expect(0);
    assert_eq!(wide_paths(&env.data_dir()), Vec::<String>::new());
}

/// Only root can give a directory to another user; CI runs as root, so this runs there.
#[test]
fn a_data_directory_owned_by_another_user_is_refused_naming_both_owners() {
    let euid = nix::unistd::geteuid();
    if !euid.is_root() {
        println!("skipped: needs root to chown a directory to another user (CI runs as root)");
        return;
    }
    let other = nix::unistd::Uid::from_raw(65534);
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    let data = env.data_dir();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    nix::unistd::chown(&data, Some(other), None).unwrap();
    let out = kr(&env, &args(&["user", "add"], "dan"), "A-Password-1\n");
    assert_ne!(out.code, 0, "{out:?}");
    let line = one_line(&out);
    assert!(
        line.contains(&format!(
            "data directory {}: {} is owned by uid 65534, but this process runs as uid 0",
            data.display(),
            data.display()
        )),
        "{out:?}"
    );
    assert_eq!(mode(&data), 0o755, "not chmod-ed");
    assert_eq!(
        std::fs::read_dir(&data).unwrap().count(),
        0,
        "nothing written"
    );

    // Our directory, with someone else's database file in it.
    let env = TestEnv::new("http://127.0.0.1:9", &Tuning::default());
    env.create_database();
    let db = env.data_dir().join("db");
    nix::unistd::chown(&db, Some(other), None).unwrap();
    let out = kr(&env, &["user", "list"], "");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        one_line(&out).contains(&format!("{} is owned by uid 65534", db.display())),
        "{out:?}"
    );
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), 65534);
}
