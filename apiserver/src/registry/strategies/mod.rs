//! One strategy per kind.
