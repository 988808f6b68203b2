//! Integration tests: real MariaDB servers started by the harness, real clients, the gateway
//! in-process.

mod basics;
mod conformance;
mod harness;
mod multiplex;
