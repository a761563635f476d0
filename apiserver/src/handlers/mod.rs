//! HTTP handlers.

#[cfg(any())]
pub mod rest;
#[cfg(any())]
pub mod watch;
pub mod discovery;
