//! Group commit: what makes a write durable, and how concurrent writers share the cost.
//!
//! sled's `flush` writes its buffers and waits with `sync_file_range(2)`: the pages have reached
//! the device, but the device's volatile write cache is not flushed and the file's size (sled
//! grows `db` as it goes) is not written. A crash of the process or the kernel loses nothing
//! then; a power loss may. So a durable write here is sled's flush *and* an `fdatasync(2)` of
//! `db` after it, which writes the size and flushes the device's cache: "on disk after power
//! loss", what SQLite's `synchronous=FULL` promises.
//!
//! Both cost a round trip to the disk, and many writers — socket clients, `passwd`s, sessions —
//! want one at the same moment. [`GroupCommit`] lets them share: a writer that finds a commit
//! running waits for the next one instead of starting its own, and that next commit covers
//! every write done before it started. The logic is independent of the disk (the commit is a
//! closure), so it is tested with a counting one.

use std::sync::{Condvar, Mutex};

/// Shares commits between concurrent writers (see the module).
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<State>,
    finished: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out: a writer's ticket is the number of tickets before it.
    issued: u64,
    /// Every ticket below this is covered by a commit that succeeded.
    covered: u64,
    /// A commit is running.
    running: bool,
}

impl GroupCommit {
    /// Makes durable every write this thread has done: returns once a commit that started
    /// after the call succeeded — this caller's, or a concurrent caller's. A failed commit is
    /// not shared: each writer it would have covered tries its own, and gets its own error.
    ///
    /// # Errors
    ///
    /// `commit`'s error, from the commit this caller ran.
    pub fn commit<E>(&self, commit: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = state.issued;
        state.issued += 1;
        loop {
            if state.covered > ticket {
                return Ok(());
            }
            if !state.running {
                state.running = true;
                // Every write of a ticket issued so far was done before this point.
                let covers = state.issued;
                drop(state);
                let running = Running(self);
                let result = commit();
                running.end(result.is_ok().then_some(covers));
                return result;
            }
            state = self.finished.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// The commit in progress. Ended by [`Running::end`], or when dropped — a panic in the
/// commit — as a failed one, so that the writers waiting for it are not left waiting for ever.
struct Running<'a>(&'a GroupCommit);

impl Running<'_> {
    /// Ends the commit; `covered`: the tickets it made durable, if it succeeded.
    fn end(self, covered: Option<u64>) {
        if let Some(covers) = covered {
            let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
            state.covered = state.covered.max(covers);
        }
        // Drop marks it ended and wakes the waiters.
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running = false;
        drop(state);
        self.0.finished.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_lone_writer_commits_each_time() {
        let group = GroupCommit::default();
        let commits = AtomicUsize::new(0);
        for _ in 0..3 {
            group
                .commit(|| {
                    commits.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
                .unwrap();
        }
        assert_eq!(commits.load(Ordering::SeqCst), 3);
    }

    /// Eight writers, a slow disk: fewer commits than writes, and every writer returns only
    /// after a commit that started after its write (its write's number is below what a
    /// finished commit had seen when it started).
    #[test]
    fn concurrent_writers_share_commits_that_started_after_their_write() {
        let group = Arc::new(GroupCommit::default());
        let written = Arc::new(AtomicUsize::new(0));
        let durable = Arc::new(AtomicUsize::new(0));
        let commits = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (group, written, durable, commits) = (
                    group.clone(),
                    written.clone(),
                    durable.clone(),
                    commits.clone(),
                );
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .commit(|| {
                                let seen = written.load(Ordering::SeqCst);
                                std::thread::sleep(Duration::from_millis(2));
                                durable.fetch_max(seen, Ordering::SeqCst);
                                commits.fetch_add(1, Ordering::SeqCst);
                                Ok::<(), ()>(())
                            })
                            .unwrap();
                        assert!(durable.load(Ordering::SeqCst) >= mine, "returned undurable");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let commits = commits.load(Ordering::SeqCst);
        assert!(commits < 160, "no commit was shared: {commits}");
    }

    #[test]
    fn a_panicking_commit_leaves_nobody_waiting() {
        let group = Arc::new(GroupCommit::default());
        let g = group.clone();
        let panicked =
            std::thread::spawn(move || g.commit(|| -> Result<(), ()> { panic!("disk") })).join();
        assert!(panicked.is_err());
        assert_eq!(
            group.commit(|| Ok::<(), ()>(())),
            Ok(()),
            "the next writer commits"
        );
    }

    #[test]
    fn a_failed_commit_covers_nobody() {
        let group = GroupCommit::default();
        assert_eq!(group.commit(|| Err("disk full")), Err("disk full"));
        let commits = AtomicUsize::new(0);
        group
            .commit(|| {
                commits.fetch_add(1, Ordering::SeqCst);
                Ok::<(), &str>(())
            })
            .unwrap();
        assert_eq!(
            commits.load(Ordering::SeqCst),
            1,
            "the next writer commits itself"
        );
    }
}
