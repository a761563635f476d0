//! Shared pieces of the tools under `hack/`.
