//! `sluice simulate`'s engine: a discrete-event model of a fleet on a virtual clock, for the
//! questions the local fleet cannot answer (hundreds of replicas, utilisation near 1).
//!
//! A simulator is trusted only once it reproduces theory, so the model starts from the cases with
//! closed forms and its tests check them: random routing to M/M/1 servers (mean time in system
//! 1/(1−λ) with unit service) and two choices over many servers (Mitzenmacher's supermarket
//! model). Every figure comes with a batch-means confidence interval after a warm-up is dropped,
//! and a run is a function of its seed.
//!
//! - [`clock`]: virtual time and the event queue.
//! - [`random`]: the seeded generator and the distributions drawn from it.
//! - [`model`]: servers with concurrency slots, a FIFO queue and a service-time distribution.
//! - [`driver`]: open-loop Poisson arrivals routed by a [`driver::Pick`], run to completion.
//! - [`stats`]: warm-up deletion, batch means and batch quantiles.
//! - [`router`]: the gateway's routers (the built-in policy and `.wasm` routers, through
//!   `phase::Policy::route`) as pickers, through one or several simulated gateways.
//! - [`scenario`]: a scenario file (TOML): the fleet, the load, the faults.
//! - [`experiment`]: a scenario run once per candidate router, into a [`report::SimReport`].
//! - [`report`]: the figures with their intervals, the terminal table, JSON and HTML.

pub mod clock;
pub mod driver;
pub mod experiment;
pub mod model;
pub mod random;
pub mod report;
pub mod router;
pub mod scenario;
pub mod stats;
