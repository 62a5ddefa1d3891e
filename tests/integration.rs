//! End-to-end tests against the real `wharf` binary, over HTTP and the command line.
//!
//! One test binary with one module per area, so it links once.

mod common;

mod alarms;
mod api;
mod autoscale;
mod bad_input;
mod chaos;
mod cli;
mod dashboard;
mod durability;
mod examples;
mod first_run;
mod hostile;
mod ingress;
mod multinode;
mod providers;
mod quickstart;
mod security;
mod soak;
mod sse;
mod storage;
mod worker;
