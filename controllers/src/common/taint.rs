//! Taint and toleration matching, as upstream's `v1helper.TolerationsTolerateTaint`.

use k8s_openapi::api::core::v1::{Taint, Toleration};

/// `t` tolerates `taint`: same effect (or any), and the key/value match per its operator.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref() {
        if !e.is_empty() && e != taint.effect {
            return false;
        }
    }
    let key = t.key.as_deref().unwrap_or("");
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" => {
            key == taint.key
                && t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}
