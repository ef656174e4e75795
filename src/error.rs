//! `stipple::Error`: every data-dependent failure names the file, tensor, node or limit involved.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter at all: tell the user how to get one.
    #[error(
        "no GPU adapter found{filter}. Install a GPU driver (Vulkan, Metal or DX12), or a software \
         Vulkan driver: `apt-get install mesa-vulkan-drivers` (Debian/Ubuntu)"
    )]
    NoAdapter { filter: String },

    /// An adapter selector (`--adapter`) matched nothing.
    #[error("no adapter matches {selector:?}; available adapters:\n{available}")]
    AdapterNotFound { selector: String, available: String },

    /// An unknown `--backend` / `STIPPLE_BACKEND` value.
    #[error("unknown backend {0:?}: expected one of vulkan, metal, dx12, gl")]
    UnknownBackend(String),

    /// `request_device` failed.
    #[error("could not open device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A wgpu validation error caught by an error scope or the uncaptured-error handler.
    #[error("GPU validation error in {context}: {message}")]
    GpuValidation { context: String, message: String },

    /// The device ran out of memory.
    #[error("GPU out of memory in {context}: {message}")]
    OutOfMemory { context: String, message: String },

    /// The device was lost (driver reset, GPU hang, unplugged).
    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    /// A shader failed to parse or validate.
    #[error("shader {shader} failed to compile: {message}")]
    Shader { shader: String, message: String },

    /// Tensor shapes that do not fit an operation, found while building a graph.
    #[error("shape error at node {node:?}: {message}")]
    Shape { node: String, message: String },

    /// Unknown name given to a plan (input/output) or graph.
    #[error("unknown {kind} {name:?}")]
    UnknownName { kind: &'static str, name: String },

    /// A device limit would be exceeded.
    #[error("{what} needs {needed} but the adapter's {limit} is {max}{hint}")]
    Limit {
        what: String,
        needed: u64,
        limit: &'static str,
        max: u64,
        hint: String,
    },

    /// A request larger than the adapter can hold, in the user's terms (see [`TooLarge`]).
    #[error("{0}")]
    TooLarge(Box<TooLarge>),

    /// A bad argument (CLI flag or API parameter).
    #[error("invalid {name}: {message}")]
    InvalidArgument { name: String, message: String },

    /// A configuration file that could not be parsed or holds an invalid value.
    #[error("{}: {message}", file.display())]
    Config { file: PathBuf, message: String },

    /// A weights file that is not valid safetensors (truncated, bad header, bad offsets…).
    #[error("{}: {message}", file.display())]
    Safetensors { file: PathBuf, message: String },

    /// A tensor missing, of the wrong shape or dtype, or left unused by the model.
    #[error("{}: tensor {tensor}: {message}", file.display())]
    Weight {
        file: PathBuf,
        tensor: String,
        message: String,
    },

    /// Tokenizer files missing or malformed.
    #[error("tokenizer {}: {message}", file.display())]
    Tokenizer { file: PathBuf, message: String },

    /// File system errors, with the path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The user cancelled a run (progress callback or Ctrl-C).
    #[error("cancelled")]
    Cancelled,
}

/// What a too-large request needs, the adapter's limit, and the largest batch (`max_batch`) and
/// `(width, height)` (`max_size`) that fit; `None` where changing that option alone cannot help.
/// Reads: "{request} needs {needed} for {what}; this adapter {limit}: {advice}".
#[derive(Debug, Clone, PartialEq)]
pub struct TooLarge {
    pub request: String,
    pub needed: String,
    pub what: String,
    pub limit: String,
    pub advice: String,
    pub max_batch: Option<usize>,
    pub max_size: Option<(usize, usize)>,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} needs {} for {}; this adapter {}: {}",
            self.request, self.needed, self.what, self.limit, self.advice
        )
    }
}

impl Error {
    pub fn shape(node: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Shape {
            node: node.into(),
            message: message.into(),
        }
    }

    pub fn invalid(name: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
