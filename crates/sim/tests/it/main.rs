//! Integration tests: the simulator served on 127.0.0.1, driven over HTTP.

mod api;
mod billing;
mod download;
mod faults;
mod lifecycle;
mod limits;
mod service;
mod support;
