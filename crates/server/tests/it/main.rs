//! Integration tests: the proxy in-process (and, for `kill -9`, as a
//! process) in front of the upstream simulator.

mod compat;
mod edges;
mod engine;
mod events;
mod faults;
mod hostile;
mod jobs;
mod keys;
mod metrics;
mod openai;
mod openai_media;
mod page;
mod process;
mod reconcile;
mod replicas;
mod sdk;
mod support;
mod tls;
mod webhooks;
