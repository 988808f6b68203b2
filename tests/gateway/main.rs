//! Integration tests: real MariaDB servers started by the harness, real clients, the gateway
//! in-process.

mod admin;
mod bad_input;
mod basics;
mod bench;
mod capture;
mod cli;
mod clients;
mod conformance;
mod harness;
mod health;
mod limits;
mod load_data;
mod long_tail;
mod multiplex;
mod otlp;
mod policies;
mod pool;
mod proxy_protocol;
mod python;
mod raw;
mod reload;
mod simulate;
mod suites;
mod transparency;
