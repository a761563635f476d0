//! Pod status the way upstream's kubelet computes it: phase from the containers' states,
//! the pod conditions, and the status patch sent to `pods/status`.

use serde_json::{json, Value};

/// One container's state, reduced to what the phase depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Summary {
    /// Not started yet (creating, pulling, config error).
    Waiting,
    /// Waiting to be restarted after it terminated (counts as stopped, like upstream).
    WaitingRestart,
    Running,
    Terminated {
        exit_code: i32,
    },
}

/// The pod phase (upstream `getPhase`): `init_failed` is an init container that failed
/// with restartPolicy Never; `init_done` means every init container completed.
pub fn phase(
    restart_policy: &str,
    init_failed: bool,
    init_done: bool,
    apps: &[Summary],
) -> &'static str {
    if init_failed {
        return "Failed";
    }
    if !init_done {
        return "Pending";
    }
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in apps {
        match s {
            Summary::Waiting => waiting += 1,
            Summary::WaitingRestart => stopped += 1,
            Summary::Running => running += 1,
            Summary::Terminated { exit_code } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        if restart_policy == "Always" {
            return "Running";
        }
        if stopped == succeeded {
            return "Succeeded";
        }
        if restart_policy == "Never" {
            return "Failed";
        }
        return "Running";
    }
    "Pending"
}

/// A condition, keeping its previous lastTransitionTime while its status is unchanged.
pub fn condition(
    prev: &[Value],
    typ: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> Value {
    let status = if ok { "True" } else { "False" };
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let old = prev.iter().find(|c| c["type"] == typ);
    let since = match old {
        Some(o) if o["status"] == status => o["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    let mut c =
        json!({"type": typ, "status": status, "lastProbeTime": null, "lastTransitionTime": since});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// The conditions the kubelet owns, after the ones it does not (PodScheduled, DisruptionTarget, ...).
#[allow(clippy::too_many_arguments)]
pub fn conditions(
    prev: &[Value],
    phase: &str,
    sandbox_ready: bool,
    init_done: bool,
    pending_init: &[String],
    unready: &[String],
) -> Vec<Value> {
    let owned = [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
    ];
    let mut out: Vec<Value> = prev
        .iter()
        .filter(|c| !owned.iter().any(|o| c["type"] == *o))
        .cloned()
        .collect();
    if !out.iter().any(|c| c["type"] == "PodScheduled") {
        out.push(condition(prev, "PodScheduled", true, None, None));
    }
    let completed = phase == "Succeeded" || phase == "Failed";
    out.push(condition(
        prev,
        "PodReadyToStartContainers",
        sandbox_ready,
        None,
        None,
    ));
    if init_done || completed && pending_init.is_empty() {
        out.push(condition(prev, "Initialized", true, None, None));
    } else {
        out.push(condition(
            prev,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                pending_init.join(" ")
            )),
        ));
    }
    let ready = unready.is_empty() && !completed && init_done;
    let (reason, message) = if ready {
        (None, None)
    } else if phase == "Succeeded" {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    out.push(condition(
        prev,
        "ContainersReady",
        ready,
        reason,
        message.clone(),
    ));
    out.push(condition(prev, "Ready", ready, reason, message));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Summary::*;

    #[test]
    fn phases() {
        assert_eq!(phase("Always", false, false, &[Waiting]), "Pending");
        assert_eq!(phase("Always", false, true, &[Waiting]), "Pending");
        assert_eq!(
            phase("Always", false, true, &[Running, WaitingRestart]),
            "Running"
        );
        assert_eq!(phase("Always", false, true, &[WaitingRestart]), "Running");
        assert_eq!(
            phase("Never", false, true, &[Terminated { exit_code: 0 }]),
            "Succeeded"
        );
        assert_eq!(
            phase("Never", false, true, &[Terminated { exit_code: 1 }]),
            "Failed"
        );
        assert_eq!(
            phase("OnFailure", false, true, &[Terminated { exit_code: 0 }]),
            "Succeeded"
        );
        assert_eq!(
            phase("OnFailure", false, true, &[WaitingRestart]),
            "Running"
        );
        assert_eq!(phase("Never", true, false, &[Waiting]), "Failed");
        assert_eq!(
            phase(
                "Always",
                false,
                true,
                &[Terminated { exit_code: 0 }, Running]
            ),
            "Running"
        );
    }

    #[test]
    fn conditions_keep_transition_times() {
        let prev = vec![
            json!({"type": "Ready", "status": "False", "lastTransitionTime": "2020-01-01T00:00:00Z"}),
            json!({"type": "PodScheduled", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}),
        ];
        let c = conditions(&prev, "Running", true, true, &[], &["c".into()]);
        let ready = c.iter().find(|c| c["type"] == "Ready").expect("Ready");
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["lastTransitionTime"], "2020-01-01T00:00:00Z");
        assert_eq!(ready["message"], "containers with unready status: [c]");
        assert_eq!(c.iter().filter(|c| c["type"] == "PodScheduled").count(), 1);
        let c = conditions(&prev, "Running", true, true, &[], &[]);
        let ready = c.iter().find(|c| c["type"] == "Ready").expect("Ready");
        assert_eq!(ready["status"], "True");
        assert_ne!(ready["lastTransitionTime"], "2020-01-01T00:00:00Z");
    }
}
