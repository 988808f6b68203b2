//! The subcommands beyond `serve` and `check-config`, one file each.

pub mod bench;
pub mod replay;
pub mod simulate;
