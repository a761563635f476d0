//! Cluster CA, serving and client certificates, kubeconfig.
