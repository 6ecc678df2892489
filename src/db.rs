//! The node's one SQLite database. Resume state (torrents, verified bitfields, upload totals)
//! and the BTT earnings ledger live in the same file, and one thread writes it.
//!
//! - [`open`] applies the settings every connection needs: WAL (readers such as
//!   `ringseed earnings` never block the writer), `synchronous = FULL` (a committed transaction
//!   survives power loss, which the ledger's "acknowledged means durable" rule rests on),
//!   foreign keys, and a busy timeout.
//! - [`migrate`] brings one component's tables (`"state"`, `"ledger"`, …) to the newest version;
//!   each component numbers its own steps in the `schema_version` table, so components evolve
//!   apart.
//! - [`DbWriter`] is the single writer thread. Callers hand it closures; it runs every job that is
//!   waiting in one transaction (each job inside its own savepoint, so a failing job undoes only
//!   itself) and answers each caller only after the commit is durable: group commit, one fsync for
//!   the whole batch.
//!
//! ```
//! # fn main() -> Result<(), ringseed::db::DbError> {
//! let dir = tempfile::tempdir().unwrap();
//! let writer = ringseed::db::DbWriter::start(
//!     &dir.path().join("node.db"),
//!     &[("example", &["CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"])],
//! )?;
//! let db = writer.handle();
//! db.call(|c| c.execute("INSERT INTO kv VALUES ('a', 1)", []))?.recv_result()?;
//! let v: i64 = db.call(|c| c.query_row("SELECT v FROM kv WHERE k = 'a'", [], |r| r.get(0)))?.recv_result()?;
//! assert_eq!(v, 1);
//! writer.shutdown();
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rusqlite::Connection;

/// Jobs waiting for the writer before a submitter blocks (or, with [`DbHandle::try_call`], is
/// told the queue is full).
const QUEUE_DEPTH: usize = 4096;
/// Most jobs committed in one transaction, so one huge burst cannot hold replies back for long.
const MAX_BATCH: usize = 1024;
/// How long a reader or a second process waits on a lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "database {path}: journal mode is {mode:?}, WAL is required (is it on a filesystem without shared memory?)"
    )]
    NotWal { path: PathBuf, mode: String },
    #[error(
        "database schema of {component:?} is at version {found}, newer than this ringseed knows ({known}); refusing to touch it"
    )]
    TooNew {
        component: String,
        found: i64,
        known: usize,
    },
    #[error("database migration {component:?} step {step}: {source}")]
    Migration {
        component: String,
        step: usize,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database commit failed: {0}")]
    Commit(String),
    #[error("cannot start the database writer thread: {0}")]
    Thread(std::io::Error),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("the database writer's queue is full")]
    QueueFull,
}

/// Opens (creating it and its directory if needed) the database at `path` with WAL,
/// `synchronous = FULL`, foreign keys and a busy timeout. A directory it creates is private
/// (0700): the wallet key lives beside the database.
pub fn open(path: &Path) -> Result<Connection, DbError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DbError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(DbError::NotWal {
            path: path.to_path_buf(),
            mode,
        });
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
        .map_err(err)?;
    // Query-planner stability: a cached statement keeps its plan whatever values are bound.
    // Without it SQLite recompiled the ledger's channel lookup (a join on a bound id) on every
    // run, a third of the writer's time under paying traffic.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(err)?;
    Ok(conn)
}

/// Opens an existing database read-only, for commands that inspect a running node's state.
pub fn open_read_only(path: &Path) -> Result<Connection, DbError> {
    let err = |source| DbError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    Ok(conn)
}

/// Brings `component`'s tables to version `steps.len()`: step `i` (SQL, may hold several
/// statements) runs once, in order, and all pending steps commit together or not at all. A
/// database from a newer ringseed (more steps recorded than known) is refused, never touched.
pub fn migrate(conn: &mut Connection, component: &str, steps: &[&str]) -> Result<(), DbError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             component TEXT PRIMARY KEY,
             version INTEGER NOT NULL)",
    )?;
    let tx = conn.transaction()?;
    let found: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version WHERE component = ?1",
        [component],
        |r| r.get(0),
    )?;
    let done = usize::try_from(found).ok().filter(|&v| v <= steps.len());
    let Some(done) = done else {
        return Err(DbError::TooNew {
            component: component.to_string(),
            found,
            known: steps.len(),
        });
    };
    for (step, sql) in steps.iter().enumerate().skip(done) {
        tx.execute_batch(sql).map_err(|source| DbError::Migration {
            component: component.to_string(),
            step,
            source,
        })?;
    }
    if done < steps.len() {
        tx.execute(
            "INSERT INTO schema_version (component, version) VALUES (?1, ?2)
             ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            rusqlite::params![component, steps.len() as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Tells one caller how its job ended, once the batch it ran in is committed or has failed.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A job: runs inside its savepoint, says whether it succeeded (keep its writes) and how to
/// answer its caller after the commit.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;

enum Message {
    Job(Job),
    Stop,
}

/// The writer thread. Owns the only writing connection; stops on [`DbWriter::shutdown`] (or
/// drop) after committing every job queued before it.
pub struct DbWriter {
    tx: Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

/// A cheap, cloneable way to hand jobs to the writer, from any thread.
#[derive(Clone)]
pub struct DbHandle {
    tx: Sender<Message>,
}

/// The answer to one job: ready once its batch is committed (durable) or has failed.
pub struct Reply<T> {
    rx: Receiver<Result<T, DbError>>,
}

impl<T> Reply<T> {
    /// Blocks until the job's batch is committed (or failed).
    pub fn recv_result(self) -> Result<T, DbError> {
        self.rx.recv().unwrap_or(Err(DbError::WriterGone))
    }

    /// The answer if it is ready, without blocking (for io_uring workers, which never wait).
    pub fn try_result(&self) -> Option<Result<T, DbError>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err(DbError::WriterGone)),
        }
    }

    /// The underlying channel, to `select!` on several replies or hand to another thread.
    pub fn receiver(&self) -> &Receiver<Result<T, DbError>> {
        &self.rx
    }
}

impl DbWriter {
    /// Opens the database at `path`, applies every component's migrations, and starts the
    /// writer thread.
    pub fn start(path: &Path, migrations: &[(&str, &[&str])]) -> Result<DbWriter, DbError> {
        let mut conn = open(path)?;
        for (component, steps) in migrations {
            migrate(&mut conn, component, steps)?;
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH);
        let thread = std::thread::Builder::new()
            .name("ringseed-db".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(DbError::Thread)?;
        Ok(DbWriter {
            tx,
            thread: Some(thread),
        })
    }

    /// A handle to submit jobs with.
    pub fn handle(&self) -> DbHandle {
        DbHandle {
            tx: self.tx.clone(),
        }
    }

    /// Commits every job queued so far, then stops the thread. Jobs submitted afterwards get
    /// [`DbError::WriterGone`].
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.tx.send(Message::Stop);
            let _ = thread.join();
        }
    }
}

impl Drop for DbWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

impl DbHandle {
    /// Queues `f` (blocking while the queue is full) and returns the reply to wait on. `f` runs
    /// on the writer thread inside a transaction; its result is delivered only after that
    /// transaction is committed. An `Err` from `f` undoes `f`'s writes and nothing else.
    pub fn call<T, F>(&self, f: F) -> Result<Reply<T>, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (job, reply) = wrap(f);
        self.tx
            .send(Message::Job(job))
            .map_err(|_| DbError::WriterGone)?;
        Ok(reply)
    }

    /// As [`DbHandle::call`], but never blocks: a full queue is [`DbError::QueueFull`] (the
    /// caller counts it and retries later).
    pub fn try_call<T, F>(&self, f: F) -> Result<Reply<T>, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        let (job, reply) = wrap(f);
        match self.tx.try_send(Message::Job(job)) {
            Ok(()) => Ok(reply),
            Err(TrySendError::Full(_)) => Err(DbError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(DbError::WriterGone),
        }
    }
}

fn wrap<T, F>(f: F) -> (Job, Reply<T>)
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, rusqlite::Error> + Send + 'static,
{
    let (tx, rx) = crossbeam_channel::bounded(1);
    let job: Job = Box::new(move |conn| {
        let result = f(conn);
        let ok = result.is_ok();
        let finish: Finish = Box::new(move |commit| {
            let answer = match (result, commit) {
                (Err(e), _) => Err(DbError::Sqlite(e)),
                (Ok(_), Err(e)) => Err(DbError::Commit(e)),
                (Ok(v), Ok(())) => Ok(v),
            };
            // A caller that stopped waiting has dropped its receiver; nothing to tell.
            let _ = tx.send(answer);
        });
        (ok, finish)
    });
    (job, Reply { rx })
}

fn write_loop(mut conn: Connection, rx: Receiver<Message>) {
    let mut stopping = false;
    while !stopping {
        let mut batch = Vec::new();
        match rx.recv() {
            Ok(Message::Job(job)) => batch.push(job),
            Ok(Message::Stop) | Err(_) => stopping = true,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Message::Job(job)) => batch.push(job),
                Ok(Message::Stop) => stopping = true,
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            run_batch(&mut conn, batch);
        }
    }
    // Jobs that raced the stop message are answered rather than left hanging.
    while let Ok(message) = rx.try_recv() {
        if let Message::Job(job) = message {
            run_batch(&mut conn, vec![job]);
        }
    }
}

/// One transaction for the batch, a savepoint per job, answers after the commit.
fn run_batch(conn: &mut Connection, batch: Vec<Job>) {
    let mut finishes = Vec::with_capacity(batch.len());
    let outcome = (|| -> Result<(), rusqlite::Error> {
        let tx = conn.transaction()?;
        for job in batch {
            // Cached statements rather than rusqlite's `Savepoint`, which parses its SQL anew for
            // every job: with a voucher per job, parsing was a fifth of the writer's time.
            tx.prepare_cached("SAVEPOINT job")?.execute([])?;
            // A job that panics is a bug, but it must not take the node's only writer (and every
            // later voucher) down with it: its savepoint is undone and its caller sees its reply
            // channel close.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&tx)));
            match ran {
                Ok((true, finish)) => {
                    finishes.push(finish);
                    tx.prepare_cached("RELEASE job")?.execute([])?;
                }
                Ok((false, finish)) => {
                    finishes.push(finish);
                    undo_job(&tx)?;
                }
                Err(_) => {
                    tracing::error!("a database job panicked; its writes were undone");
                    undo_job(&tx)?;
                }
            }
        }
        tx.commit()
    })();
    let commit = outcome.map_err(|e| e.to_string());
    if let Err(e) = &commit {
        tracing::error!(
            "database commit failed, {} job(s) not saved: {e}",
            finishes.len()
        );
    }
    for finish in finishes {
        finish(commit.clone());
    }
}

/// Undoes a job's writes and ends its savepoint.
fn undo_job(c: &Connection) -> Result<(), rusqlite::Error> {
    c.prepare_cached("ROLLBACK TO job")?.execute([])?;
    c.prepare_cached("RELEASE job")?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV: &[&str] = &["CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"];

    fn insert(db: &DbHandle, k: impl Into<String>, v: i64) -> Reply<usize> {
        let k = k.into();
        db.call(move |c| c.execute("INSERT INTO kv VALUES (?1, ?2)", rusqlite::params![k, v]))
            .unwrap()
    }

    fn count(path: &Path) -> i64 {
        open_read_only(path)
            .unwrap()
            .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failing_job_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = DbWriter::start(&path, &[("kv", KV)]).unwrap();
        let db = writer.handle();
        let replies: Vec<_> = (0..50)
            .map(|i| {
                // Every tenth key repeats the one before it: a primary-key violation.
                insert(&db, format!("k{}", i - (i % 10 == 9) as i32), i as i64)
            })
            .collect();
        let failed = replies
            .into_iter()
            .filter(|r| r.receiver().recv().unwrap().is_err())
            .count();
        assert_eq!(failed, 5);
        assert_eq!(count(&path), 45);
        writer.shutdown();
    }

    #[test]
    fn replies_come_after_the_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = DbWriter::start(&path, &[("kv", KV)]).unwrap();
        insert(&writer.handle(), "a", 7).recv_result().unwrap();
        // Another connection sees it before the writer stops: the reply meant "committed".
        assert_eq!(count(&path), 1);
        writer.shutdown();
        let writer = DbWriter::start(&path, &[("kv", KV)]).unwrap();
        assert_eq!(count(&path), 1);
        let db = writer.handle();
        writer.shutdown();
        assert!(matches!(
            db.call(|c| c.execute("DELETE FROM kv", [])),
            Err(DbError::WriterGone)
        ));
    }

    #[test]
    fn migrations_run_once_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let mut conn = open(&path).unwrap();
        let steps: &[&str] = &[KV[0], "ALTER TABLE kv ADD COLUMN note TEXT"];
        migrate(&mut conn, "kv", &steps[..1]).unwrap();
        migrate(&mut conn, "kv", steps).unwrap();
        migrate(&mut conn, "kv", steps).unwrap();
        migrate(&mut conn, "other", &["CREATE TABLE o (x)"]).unwrap();
        let err = migrate(&mut conn, "kv", &steps[..1]).unwrap_err();
        assert!(
            err.to_string().contains("newer than this ringseed"),
            "{err}"
        );
        // A broken step leaves the component at its old version.
        let bad: &[&str] = &[KV[0], steps[1], "CREATE TABLE kv (x)"];
        assert!(matches!(
            migrate(&mut conn, "kv", bad),
            Err(DbError::Migration { step: 2, .. })
        ));
        let v: i64 = conn
            .query_row(
                "SELECT version FROM schema_version WHERE component = 'kv'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(v, 2);
    }
}
