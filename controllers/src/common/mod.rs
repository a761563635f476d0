//! Helpers the controllers share.

pub mod informer;
pub mod pod;
pub mod taint;
