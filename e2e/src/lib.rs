//! End-to-end tests live in `tests/` and in `kubectl.sh`; they need a running cluster.
