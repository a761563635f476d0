//! The generic store: every verb, once.
