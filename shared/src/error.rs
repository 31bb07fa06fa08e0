//! The one error type of kubeyolo.
//!
//! Every failure a user can cause (a missing file, a bad yaml line, an unknown cfg key, a corrupt
//! image) becomes an [`Error`] that names *where* (file, line, key) and *what to do* (hint), and
//! maps to a distinct process exit code so a pipeline (or a script) can tell failures apart
//! without parsing text. Steps never panic on user input: they return `Result<T>` up to `main`,
//! which prints the error and exits with [`Error::exit_code`].

use std::fmt;
use std::path::{Path, PathBuf};

/// What went wrong, coarse enough to pick an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad command-line usage (flag values that make no sense together).
    Usage,
    /// A configuration file (cfg yaml, dataset yaml, model yaml) is missing or invalid.
    Config,
    /// The dataset itself is unusable (no images in a split, unreadable image, ...).
    Data,
    /// Model or weights problem (unknown module, wrong checkpoint, shape mismatch).
    Model,
    /// Reading or writing a file failed for a reason outside the user's content.
    Io,
    /// Network access (weights download, tracking server) failed.
    Network,
    /// A bug in kubeyolo: an invariant broke. Reported, never a panic.
    Internal,
    /// Stopped by a signal (SIGTERM: Kubernetes eviction) after saving a checkpoint; the step
    /// exits non-zero so Kubeflow retries it, and the retry resumes.
    Interrupted,
}

impl ErrorKind {
    /// Process exit code for this kind. 1 is left for "several problems" reports and 2 for clap.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::Config => 3,
            ErrorKind::Data => 4,
            ErrorKind::Model => 5,
            ErrorKind::Io => 6,
            ErrorKind::Network => 7,
            ErrorKind::Internal => 70,
            ErrorKind::Interrupted => 143,
        }
    }
}

/// An error with the context a user needs to fix it.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub file: Option<PathBuf>,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub hint: Option<String>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: message.into(), file: None, line: None, key: None, hint: None, source: None }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }
    pub fn data(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Data, message)
    }
    pub fn model(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Model, message)
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }
    pub fn network(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Network, message)
    }
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Interrupted, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An I/O failure on `path` (open, read, write, rename), keeping the OS error as source.
    pub fn io_at(path: &Path, what: &str, err: std::io::Error) -> Self {
        let kind = if err.kind() == std::io::ErrorKind::NotFound { ErrorKind::Config } else { ErrorKind::Io };
        Error::new(kind, format!("cannot {what}: {err}")).with_file(path).with_source(err)
    }

    pub fn with_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.file = Some(file.into());
        self
    }
    pub fn with_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

impl fmt::Display for Error {
    /// `file:line: key 'k': message` then `  hint: ...` on its own line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
            write!(f, ": ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "key '{key}': ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<candle_core::Error> for Error {
    /// Tensor errors inside kubeyolo are shape/device bugs or model problems, never user syntax.
    fn from(err: candle_core::Error) -> Self {
        Error::model(format!("tensor operation failed: {err}"))
    }
}

/// Run a step's body: print the error (with its hint) to stderr and exit with its code.
/// Every step binary's `main` is `kubeyolo::error::run_main(|| real_main(args))`.
pub fn run_main(body: impl FnOnce() -> Result<()>) -> ! {
    match body() {
        Ok(()) => std::process::exit(0),
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(err.exit_code())
        }
    }
}
