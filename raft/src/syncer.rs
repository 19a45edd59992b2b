//! The thread that makes a log store's appends durable, so that no fsync blocks the async executor.
//!
//! `LogStore::append` writes its records into the page cache on the caller and hands the segment to
//! this thread with openraft's `LogFlushed` callback; the thread takes every job queued since its
//! last round, `fdatasync`s each file once (and the directory, if an append created a segment) and
//! only then fires the callbacks, in order. A node runs many groups on two executor threads: a sync
//! on one of them used to stall every group polled there for the length of a device flush.
//!
//! A failed sync poisons the store (shared [`Poison`]): the round's callbacks and every later call
//! fail, and the sync is never retried (the page cache may already have dropped the dirty pages).

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use openraft::storage::LogFlushed;
use sus_disk::{Disk, DiskFile};

use crate::TypeConfig;

/// The first failure of a store, shared by the store and its sync thread.
#[derive(Clone, Default)]
pub(crate) struct Poison(Arc<Mutex<Option<String>>>);

impl Poison {
    pub(crate) fn get(&self) -> Option<String> {
        lock(&self.0).clone()
    }

    /// Records `why` unless an earlier failure is already recorded.
    pub(crate) fn set(&self, why: String) {
        lock(&self.0).get_or_insert(why);
    }
}

/// A batch of appended records to make durable before `callback` fires.
pub(crate) struct Job {
    /// The segment the batch wrote to; none if it wrote nothing.
    pub(crate) file: Option<Arc<dyn DiskFile>>,
    /// Set when the append created a segment: its directory entry must be durable too.
    pub(crate) new_segment_in: Option<PathBuf>,
    pub(crate) callback: LogFlushed<TypeConfig>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    enqueued: u64,
    finished: u64,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the thread: a job was queued or the store closed.
    work: Condvar,
    /// Wakes waiters of [`Syncer::wait_idle`]: a round finished.
    idle: Condvar,
    poison: Poison,
    disk: Arc<dyn Disk>,
}

/// One log store's sync thread; dropping it finishes the queued jobs and joins the thread.
pub(crate) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing is left half-done under these locks: a panic elsewhere does not taint them.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Syncer {
    pub(crate) fn start(disk: Arc<dyn Disk>, poison: Poison, name: &str) -> io::Result<Syncer> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            poison,
            disk,
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(&worker))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn submit(&self, job: Job) {
        let mut q = lock(&self.shared.queue);
        q.jobs.push(job);
        q.enqueued += 1;
        self.shared.work.notify_one();
    }

    /// Blocks until every job queued so far has finished (synced or failed): truncation and
    /// purge change files, and must not race a sync or fire a callback for entries they removed.
    pub(crate) fn wait_idle(&self) {
        let mut q = lock(&self.shared.queue);
        let target = q.enqueued;
        while q.finished < target {
            q = self.shared.idle.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.work.notify_one();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("raft log sync thread panicked");
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let (jobs, upto) = {
            let mut q = lock(&shared.queue);
            while q.jobs.is_empty() && !q.closed {
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.jobs.is_empty() {
                return;
            }
            (std::mem::take(&mut q.jobs), q.enqueued)
        };
        let result = match shared.poison.get() {
            Some(why) => Err(format!("log store failed earlier: {why}")),
            None => sync_all(shared.disk.as_ref(), &jobs).map_err(|e| {
                let why = format!("sync of appended entries: {e}");
                tracing::error!("raft log store {why}; refusing all further I/O");
                shared.poison.set(why.clone());
                why
            }),
        };
        for job in jobs {
            let outcome = match &result {
                Ok(()) => Ok(()),
                Err(why) => Err(io::Error::other(why.clone())),
            };
            job.callback.log_io_completed(outcome);
        }
        lock(&shared.queue).finished = upto;
        shared.idle.notify_all();
    }
}

/// Syncs each file of the round once, then each new segment's directory.
fn sync_all(disk: &dyn Disk, jobs: &[Job]) -> io::Result<()> {
    let mut files: Vec<&Arc<dyn DiskFile>> = Vec::new();
    let mut dirs: Vec<&PathBuf> = Vec::new();
    for job in jobs {
        if let Some(file) = &job.file
            && !files.iter().any(|f| Arc::ptr_eq(f, file))
        {
            files.push(file);
        }
        if let Some(dir) = &job.new_segment_in
            && !dirs.contains(&dir)
        {
            dirs.push(dir);
        }
    }
    for file in files {
        file.sync_data()?;
    }
    for dir in dirs {
        disk.sync_dir(dir)?;
    }
    Ok(())
}
