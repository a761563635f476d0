//! Embedded store: SQLite with a kine-like revision log.
