//! Subcommands of the `stipple` binary.

pub mod bench;
pub mod generate;
pub mod info;
