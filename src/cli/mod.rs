//! Subcommands of the `stipple` binary.

pub mod bench;
pub mod bench_serve;
pub mod convert;
pub mod generate;
pub mod info;
pub mod init_random;
pub mod load_progress;
pub mod preview;
pub mod prompts_file;
pub mod serve;
