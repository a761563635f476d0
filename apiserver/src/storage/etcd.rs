//! etcd v3 store through etcd-client.
