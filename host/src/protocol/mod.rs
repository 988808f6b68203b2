//! The MySQL client/server wire protocol, server side: framing, packets and their encodings.
//!
//! Packets are plain structs with `encode` / `decode`, kept apart from session logic. Decoding
//! never trusts its input: every read is bounds-checked and fails with [`DecodeError`].

pub mod buf;
pub mod command;
pub mod constants;
pub mod handshake;
pub mod packet;
pub mod params;
pub mod reply;
pub mod resultset;

pub use buf::{DecodeError, Reader};
pub use packet::{PacketError, PacketStream};
