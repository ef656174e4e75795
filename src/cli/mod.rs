//! Subcommands of the `stipple` binary.

pub mod bench;
pub mod bench_serve;
pub mod generate;
pub mod info;
pub mod prompts_file;
pub mod serve;
