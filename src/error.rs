//! The error type of the whole tool and the exit codes it maps to.
//!
//! Every error reads as one line that names what is at fault (file and line, table and column, tile,
//! host and port) and never carries a password.

use std::path::PathBuf;

use crate::tile::TileCoord;

/// The process exit codes oar-tiles documents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCode {
    /// The job did everything it was asked.
    Success = 0,
    /// The job failed while running (database, rendering, output).
    Failure = 1,
    /// The command line or the configuration is wrong; nothing was done.
    Usage = 2,
    /// Stopped by SIGINT (128 + 2); the output's state is as it was before the run.
    Interrupted = 130,
    /// Stopped by SIGTERM (128 + 15); the output's state is as it was before the run.
    Terminated = 143,
}

/// Everything that can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command-line value that cannot be used.
    #[error("{0}")]
    Usage(String),

    /// A configuration file that cannot be read or is invalid.
    #[error("{}: {message}", location(path, *line, *column))]
    Config {
        /// The config file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What is wrong.
        message: String,
    },

    /// A connection setting that cannot be used: the database URL, a `PG*` variable, a TLS
    /// certificate or key file, a replica's entry, the change schema's name.
    #[error("{message}")]
    Setting {
        /// The setting at fault (`database.url`, `PGPORT`, `sslrootcert`, `database.replicas[1]`),
        /// or the file it names.
        setting: String,
        /// What is wrong, naming the setting.
        message: String,
    },

    /// A shard plan that cannot be used: malformed, of another version, or made for other
    /// settings or another number of shards.
    #[error("{message}")]
    Plan {
        /// Where the plan is (file or object), or `shard plan` when it is being made.
        location: String,
        /// What is wrong.
        message: String,
    },

    /// The state a run needs is not there: change capture not installed, no watermark to
    /// reseed from.
    #[error("{message}")]
    State {
        /// What is missing, for whom (`tileset facilities`, the change schema).
        missing: String,
        /// What to do about it.
        message: String,
    },

    /// A configured source (table, column, filter) that the database does not have or refuses.
    #[error("tileset `{tileset}`, layer `{layer}`: {message}")]
    Source {
        /// The tileset's name.
        tileset: String,
        /// The layer's name.
        layer: String,
        /// What is wrong.
        message: String,
    },

    /// The database could not be reached or refused us.
    #[error("cannot connect to PostgreSQL at {target}: {message}")]
    Connect {
        /// host:port/database and user, never the password.
        target: String,
        /// The reason.
        message: String,
    },

    /// A query or a connection failed outside of any tile.
    #[error("database error: {0}")]
    Database(#[from] DbError),

    /// Rendering one tile failed.
    #[error("tile {tile} of tileset `{tileset}`: {message}")]
    Render {
        /// The tileset's name.
        tileset: String,
        /// The tile at fault.
        tile: TileCoord,
        /// The reason.
        message: String,
    },

    /// The output could not be created, written or finished.
    #[error("output {}: {message}", path.display())]
    Output {
        /// The output's path or URL.
        path: PathBuf,
        /// The reason.
        message: String,
        /// The error underneath, when there is one (an S3 request's, say).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },

    /// Another job holds the output.
    #[error("output {output} is in use by another oar-tiles job ({holder}); pass --wait-lock to wait for it")]
    Locked {
        /// The output.
        output: String,
        /// Who holds the lock, as it recorded itself.
        holder: String,
    },

    /// A signal asked the job to stop.
    #[error("stopped by {signal}; an MBTiles or PMTiles output is as it was before this run; a tree or S3 prefix may already hold some of its tiles under its old state, and its outbox lists them for the next run's --changed-list and CDN purges; a full seed's progress is kept for the same command to resume")]
    Stopped {
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
    },

    /// Some tiles failed even after retries (`--keep-going`).
    #[error("{count} tile(s) failed; they are listed in {} (feed it to --tiles-from)", list.display())]
    TilesFailed {
        /// How many.
        count: usize,
        /// The file listing them.
        list: PathBuf,
    },

    /// `validate` (or a seed's `--verify-sample`) found problems in outputs.
    #[error("{problems} problem(s) found in {outputs} output(s)")]
    Invalid {
        /// Problems found.
        problems: u64,
        /// Outputs with problems.
        outputs: usize,
    },

    /// The output is fine but writing an auxiliary file (summary, list) failed.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The reason.
        message: String,
    },

    /// The operating system refused what the process itself needs (threads, timers, sockets).
    #[error("{what}: {source}")]
    System {
        /// What could not be done.
        what: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

fn location(path: &std::path::Path, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{}:{line}:{column}", path.display()),
        (Some(line), None) => format!("{}:{line}", path.display()),
        _ => path.display().to_string(),
    }
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        if let Error::Output {
            source: Some(source),
            ..
        } = self
        {
            match abandoned_by(source.as_ref()) {
                Some("SIGINT") => return ExitCode::Interrupted,
                Some(_) => return ExitCode::Terminated,
                None => {}
            }
        }
        match self {
            Error::Usage(_)
            | Error::Config { .. }
            | Error::Setting { .. }
            | Error::Plan { .. }
            | Error::State { .. }
            | Error::Source { .. } => ExitCode::Usage,
            Error::Connect { .. }
            | Error::Database(_)
            | Error::Render { .. }
            | Error::Output { .. }
            | Error::File { .. }
            | Error::Locked { .. }
            | Error::TilesFailed { .. }
            | Error::Invalid { .. }
            | Error::System { .. } => ExitCode::Failure,
            Error::Stopped { signal: "SIGINT" } => ExitCode::Interrupted,
            Error::Stopped { .. } => ExitCode::Terminated,
        }
    }

    /// Builds a setting error: `setting` names what is at fault, `message` says so in full.
    pub fn setting(setting: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Setting {
            setting: setting.into(),
            message: message.to_string(),
        }
    }

    /// A layer's statement that PostgreSQL did not take: a configuration error when the server
    /// refused it (a missing column, a syntax error), but a database one, which a later run may
    /// not meet, when the failure was transient: a lock held past `statement_timeout` (a
    /// migration's), a lost connection, a restarting server.
    pub fn source_refused(
        tileset: impl Into<String>,
        layer: impl Into<String>,
        what: &str,
        err: &tokio_postgres::Error,
    ) -> Self {
        let (tileset, layer) = (tileset.into(), layer.into());
        if pg_is_transient(err) {
            return Error::Database(DbError::Unexpected(format!(
                "tileset `{tileset}`, layer `{layer}`: {what}: {} (a transient failure: a lock \
                 held past [database] statement_timeout, or a lost connection; run again)",
                pg_message(err)
            )));
        }
        Error::Source {
            tileset,
            layer,
            message: format!("{what}: {}", pg_message(err)),
        }
    }

    /// Builds an output error from anything displayable.
    pub fn output(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Output {
            path: path.into(),
            message: message.to_string(),
            source: None,
        }
    }

    /// The output's folder is missing: the tool never creates a parent folder it was not asked
    /// for (a typo in `output` would otherwise scatter tiles), so it says how to make it.
    pub fn missing_folder(output: impl Into<PathBuf>, folder: &std::path::Path) -> Self {
        let folder = folder.display();
        Error::output(
            output,
            format!(
                "directory {folder} does not exist: create it (`mkdir -p {folder}`) or fix the \
                 output path (`output` in the config, or --output)"
            ),
        )
    }

    /// Builds an output error whose reason is another error, kept as its cause.
    pub fn output_caused(
        path: impl Into<PathBuf>,
        cause: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Output {
            path: path.into(),
            message: cause.to_string(),
            source: Some(Box::new(cause)),
        }
    }
}

/// The signal that asked the process to stop, once one did: waits for a pooled connection
/// (`db::get`) and store requests end with it, as render loops end with their `Stop`.
pub fn stop_signal() -> &'static tokio::sync::watch::Sender<Option<&'static str>> {
    static STOPPING: std::sync::OnceLock<tokio::sync::watch::Sender<Option<&'static str>>> =
        std::sync::OnceLock::new();
    STOPPING.get_or_init(|| tokio::sync::watch::channel(None).0)
}

/// Resolves with the signal's name once one asks the process to stop after this call; never
/// otherwise. A request started after the signal (the lock's release, a resume journal) runs: the
/// stop abandons only what was in flight when it came.
pub async fn stop_requested() -> &'static str {
    let mut receiver = stop_signal().subscribe();
    receiver.borrow_and_update();
    let signal = match receiver.changed().await {
        Ok(()) => *receiver.borrow(),
        // The sender lives for the process.
        Err(_) => None,
    };
    match signal {
        Some(signal) => signal,
        None => std::future::pending().await,
    }
}

/// A request abandoned because a signal asked the process to stop: under an output's error, it
/// makes the process end with the signal's exit code rather than as a failure.
#[derive(Debug, thiserror::Error)]
#[error("abandoned: stopped by {signal}")]
pub struct Abandoned {
    /// The signal's name.
    pub signal: &'static str,
}

/// The signal that abandoned a request somewhere under `err`, if one did.
fn abandoned_by(err: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(err);
    while let Some(err) = cause {
        if let Some(abandoned) = err.downcast_ref::<Abandoned>() {
            return Some(abandoned.signal);
        }
        cause = err.source();
    }
    None
}

/// The result type of oar-tiles.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to PostgreSQL, with the driver's error as its cause.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A statement failed or the connection broke.
    #[error("{}", pg_message(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A statement failed while doing `what`.
    #[error("{what}: {}", pg_message(.source))]
    During {
        /// What the statement was for.
        what: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// No connection could be had from the pool.
    #[error("{}", pool_message(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The server answered something the tool cannot use.
    #[error("{0}")]
    Unexpected(String),
}

impl From<tokio_postgres::Error> for Error {
    fn from(err: tokio_postgres::Error) -> Self {
        Error::Database(DbError::Query(err))
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Error::Database(DbError::Pool(err))
    }
}

impl DbError {
    /// Wraps a driver error with what the statement was for.
    pub fn during(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Error {
        let what = what.into();
        move |source| Error::Database(DbError::During { what, source })
    }
}

/// One line for a failure to get a connection from the pool.
pub fn pool_message(err: &deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(err) => pg_message(err),
        deadpool_postgres::PoolError::Timeout(_) => "timed out while connecting".into(),
        other => other.to_string(),
    }
}

/// Whether a failed statement may succeed when tried again: the connection broke, the server is
/// restarting or overloaded, a lock was not had in time, or the statement ran out of time.
pub fn pg_is_transient(err: &tokio_postgres::Error) -> bool {
    match err.code() {
        None => true,
        Some(code) => {
            let code = code.code();
            code.starts_with("08") // connection exception
                || code.starts_with("57") // operator intervention: shutdown, query_canceled (timeout)
                || code.starts_with("53") // insufficient resources, too many connections
                || code == "55P03" // lock_not_available (lock_timeout)
                || code == "40001"
                || code == "40P01"
        }
    }
}

/// Flattens a PostgreSQL error into one line: the server's message and detail when there is one,
/// the client's description otherwise.
pub fn pg_message(err: &tokio_postgres::Error) -> String {
    if let Some(db) = err.as_db_error() {
        let mut message = db.message().to_string();
        if let Some(detail) = db.detail() {
            message.push_str(&format!(" ({detail})"));
        }
        return message;
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message.replace('\n', " ")
}
