//! minik8s API server: Kubernetes REST and watch semantics over TLS, on an embedded SQLite
//! store or etcd. See `../shared/ARCHITECTURE.md` for the request path.

pub mod admission;
pub mod auth;
pub mod certificates;
pub mod config;
pub mod crd;
pub mod encryption;
pub mod error;
pub mod fieldmanager;
pub mod handlers;
pub mod object;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod registry;
pub mod request_info;
pub mod selector;
pub mod server;
pub mod storage;
pub mod table;
pub mod typed;
pub mod validation;
pub mod watch_cache;

pub use config::Config;
pub use server::{run, start, Server};
