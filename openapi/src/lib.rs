//! OpenAPI v2/v3 documents and patch metadata. Built out by the kubectl-fidelity issue;
//! for now it only names the API version the documents describe.

/// The Kubernetes minor version whose API minik8s serves.
pub const KUBERNETES_MINOR: &str = "33";
