//! The backend test suite every `Backend` must pass.
