//! Robustness testing of `kvstore`: real clusters under seeded faults, a recorded
//! workload, and checkers for linearizability, watch, durability and lease guarantees.
//!
//! `cluster` and `proxy` own the processes and the network; `workload` the clients that
//! record the history (`history`); `nemesis` the fault schedule; `check` the checkers;
//! `run` ties one run together and reports.

pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod proxy;
pub mod run;
pub mod workload;
