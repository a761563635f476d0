//! batch/v1 Jobs and CronJobs.

use k8s_openapi::api::batch::v1::{CronJob, Job, JobSpec};
use serde_json::{json, Value};

use super::apps::{reset_status, validate_selector_and_template, validate_selector_immutable};
use super::pod_template::{
    default_template, validate_pod_template, validate_template_restart_policy,
};
use super::{
    child, child_map, fields_at, set_default, str_at, validate_update_with, validate_with,
};
use crate::registry::Strategy;
use crate::validation::{validate_nonnegative, FieldError, FieldErrors, NameRule, FIELD_IMMUTABLE};

const JOB_RESTART_POLICIES: &[&str] = &["OnFailure", "Never"];

fn validate_job_counts(spec: &JobSpec, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (field, v) in [
        ("parallelism", spec.parallelism.map(i64::from)),
        ("completions", spec.completions.map(i64::from)),
        ("backoffLimit", spec.backoff_limit.map(i64::from)),
        (
            "ttlSecondsAfterFinished",
            spec.ttl_seconds_after_finished.map(i64::from),
        ),
        ("activeDeadlineSeconds", spec.active_deadline_seconds),
    ] {
        errs.extend(validate_nonnegative(v, &format!("{path}.{field}")));
    }
    match spec.completion_mode.as_deref() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if spec.completions.is_none() {
                errs.push(FieldError::required(
                    format!("{path}.completions"),
                    "when completion mode is Indexed",
                ));
            }
        }
        Some(m) => errs.push(FieldError::not_supported(
            format!("{path}.completionMode"),
            m,
            &["NonIndexed", "Indexed"],
        )),
    }
    errs
}

fn validate_job(obj: &Value, j: &Job) -> FieldErrors {
    let Some(spec) = &j.spec else {
        return vec![FieldError::required("spec.template", "")];
    };
    let mut errs = validate_job_counts(spec, "spec");
    errs.extend(validate_selector_and_template(
        obj,
        Some(&spec.template),
        "job",
    ));
    errs.extend(validate_template_restart_policy(
        Some(&spec.template),
        "spec.template",
        JOB_RESTART_POLICIES,
    ));
    errs
}

/// Upstream `SetDefaults_Job` on a JSON job spec.
fn default_job_spec(spec: &mut serde_json::Map<String, Value>) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set_default(
        spec,
        "backoffLimit",
        json!(if per_index { i64::from(i32::MAX) } else { 6 }),
    );
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let has_pfp = spec.get("podFailurePolicy").is_some_and(|v| !v.is_null());
    set_default(
        spec,
        "podReplacementPolicy",
        json!(if has_pfp {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
}

/// batch/v1 Job.
pub struct JobStrategy;

impl Strategy for JobStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            default_job_spec(spec);
        }
        if let Some(spec) = obj.get_mut("spec") {
            default_template(spec, "template");
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj);
        let uid = str_at(obj, "/metadata/uid").to_string();
        let name = str_at(obj, "/metadata/name").to_string();
        let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool) == Some(true);
        if !manual && !uid.is_empty() {
            // Upstream generates a selector on the job's uid and labels the template to match.
            if let Some(spec) = child(obj, "spec") {
                spec.insert(
                    "selector".into(),
                    json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
                );
                if let Some(labels) = child_map(spec, "template")
                    .and_then(|t| child_map(t, "metadata"))
                    .and_then(|m| child_map(m, "labels"))
                {
                    labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
                    labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
                    labels.insert("controller-uid".into(), json!(uid));
                    labels.insert("job-name".into(), json!(name));
                }
            }
        }
        // Upstream defaults the job's labels from its template's labels.
        let labels = obj.pointer("/spec/template/metadata/labels").cloned();
        if let (Some(labels), Some(meta)) = (labels, child(obj, "metadata")) {
            if meta
                .get("labels")
                .and_then(Value::as_object)
                .is_none_or(|m| m.is_empty())
            {
                meta.insert("labels".into(), labels);
            }
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<Job>(obj, true, NameRule::Subdomain, |j| validate_job(obj, j))
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_update_with::<Job>(new, old, |n, _| validate_job(new, n));
        errs.extend(validate_selector_immutable(new, old));
        let suspended = new.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        let (nt, ot) = (new.pointer("/spec/template"), old.pointer("/spec/template"));
        if nt != ot && !suspended {
            let rendered = nt.map(Value::to_string).unwrap_or_else(|| "null".into());
            errs.push(FieldError::invalid_raw(
                "spec.template",
                rendered,
                FIELD_IMMUTABLE,
            ));
        }
        for f in ["completions", "completionMode"] {
            let (n, o) = (
                new.pointer(&format!("/spec/{f}")),
                old.pointer(&format!("/spec/{f}")),
            );
            if n != o {
                let rendered = n.map(|v| {
                    v.as_str()
                        .map_or_else(|| v.to_string(), |s| format!("{s:?}"))
                });
                errs.push(FieldError::invalid_raw(
                    format!("spec.{f}"),
                    rendered.unwrap_or_else(|| "null".into()),
                    FIELD_IMMUTABLE,
                ));
            }
        }
        errs
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let mut f = fields_at(obj, &[("status.successful", "/status/succeeded")]);
        for (_, v) in f.iter_mut() {
            if v.is_empty() {
                *v = "0".into();
            }
        }
        f
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &["status.successful"]
    }
}

// ------------------------------------------------------------------------------------------
// CronJob

/// robfig/cron (standard parser) field bounds and names.
const CRON_FIELDS: &[(u32, u32, &[&str])] = &[
    (0, 59, &[]),
    (0, 23, &[]),
    (1, 31, &[]),
    (
        1,
        12,
        &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ],
    ),
    (0, 6, &["sun", "mon", "tue", "wed", "thu", "fri", "sat"]),
];

const CRON_DESCRIPTORS: &[&str] = &[
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];

fn cron_value(s: &str, min: u32, names: &[&str]) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(u32::try_from(i).unwrap_or(0) + min);
    }
    s.parse::<u32>().map_err(|_| {
        format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
    })
}

fn cron_field(field: &str, (min, max, names): (u32, u32, &[&str])) -> Result<(), String> {
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else {
            match range.split_once('-') {
                Some((a, b)) => (cron_value(a, min, names)?, cron_value(b, min, names)?),
                None => {
                    let v = cron_value(range, min, names)?;
                    (v, if step.is_some() { max } else { v })
                }
            }
        };
        if lo < min {
            return Err(format!(
                "beginning of range ({lo}) below minimum ({min}): {part}"
            ));
        }
        if hi > max {
            return Err(format!("end of range ({hi}) above maximum ({max}): {part}"));
        }
        if lo > hi {
            return Err(format!(
                "beginning of range ({lo}) beyond end of range ({hi}): {part}"
            ));
        }
        if let Some(s) = step {
            let n = s.parse::<u32>().map_err(|_| {
                format!("failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax")
            })?;
            if n == 0 {
                return Err(format!("step of range should be a positive number: {part}"));
            }
        }
    }
    Ok(())
}

/// Upstream `cron.ParseStandard` acceptance, with its error wording.
pub fn parse_cron(schedule: &str) -> Result<(), String> {
    let s = schedule.trim();
    // TZ=/CRON_TZ= prefixes are rejected by validation separately (spec.timeZone is the way).
    if s.starts_with('@') {
        if CRON_DESCRIPTORS.contains(&s) || s.strip_prefix("@every ").is_some() {
            return Ok(());
        }
        return Err(format!("unrecognized descriptor: {s}"));
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    for (f, bounds) in fields.iter().zip(CRON_FIELDS) {
        cron_field(f, *bounds)?;
    }
    Ok(())
}

fn validate_cron_job(c: &CronJob) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let name = c.metadata.name.as_deref().unwrap_or("");
    if name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            name,
            "must be no more than 52 characters",
        ));
    }
    let Some(spec) = &c.spec else {
        return vec![FieldError::required("spec.schedule", "")];
    };
    if spec.schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else if spec.schedule.contains("TZ") {
        errs.push(FieldError::invalid(
            "spec.schedule",
            &spec.schedule,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ));
    } else if let Err(e) = parse_cron(&spec.schedule) {
        errs.push(FieldError::invalid("spec.schedule", &spec.schedule, e));
    }
    if let Some(p) = spec.concurrency_policy.as_deref() {
        if !["Allow", "Forbid", "Replace"].contains(&p) {
            errs.push(FieldError::not_supported(
                "spec.concurrencyPolicy",
                p,
                &["Allow", "Forbid", "Replace"],
            ));
        }
    }
    errs.extend(validate_nonnegative(
        spec.starting_deadline_seconds,
        "spec.startingDeadlineSeconds",
    ));
    errs.extend(validate_nonnegative(
        spec.successful_jobs_history_limit.map(i64::from),
        "spec.successfulJobsHistoryLimit",
    ));
    errs.extend(validate_nonnegative(
        spec.failed_jobs_history_limit.map(i64::from),
        "spec.failedJobsHistoryLimit",
    ));
    let path = "spec.jobTemplate.spec";
    match &spec.job_template.spec {
        Some(js) => {
            errs.extend(validate_job_counts(js, path));
            errs.extend(validate_pod_template(
                Some(&js.template),
                &format!("{path}.template"),
            ));
            errs.extend(validate_template_restart_policy(
                Some(&js.template),
                &format!("{path}.template"),
                JOB_RESTART_POLICIES,
            ));
        }
        None => errs.push(FieldError::required(format!("{path}.template"), "")),
    }
    errs
}

/// batch/v1 CronJob.
pub struct CronJobStrategy;

impl Strategy for CronJobStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            set_default(spec, "concurrencyPolicy", json!("Allow"));
            set_default(spec, "suspend", json!(false));
            set_default(spec, "successfulJobsHistoryLimit", json!(3));
            set_default(spec, "failedJobsHistoryLimit", json!(1));
        }
        if let Some(js) = obj.pointer_mut("/spec/jobTemplate/spec") {
            default_template(js, "template");
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj);
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<CronJob>(obj, true, NameRule::Subdomain, validate_cron_job)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<CronJob>(new, old, |n, _| validate_cron_job(n))
    }
}

#[cfg(test)]
mod tests {
    use super::super::msgs;
    use super::*;

    fn job() -> Value {
        json!({"metadata": {"name": "pi", "namespace": "d", "uid": "u1"},
               "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "perl"}], "restartPolicy": "Never"}}}})
    }

    #[test]
    fn job_defaults_and_selector() {
        let mut j = job();
        JobStrategy.default(&mut j);
        JobStrategy.prepare_for_create(&mut j);
        assert_eq!(j["spec"]["completions"], 1);
        assert_eq!(j["spec"]["parallelism"], 1);
        assert_eq!(j["spec"]["backoffLimit"], 6);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["job-name"],
            "pi"
        );
        assert_eq!(j["metadata"]["labels"]["job-name"], "pi");
        assert!(
            JobStrategy.validate(&j).is_empty(),
            "{:?}",
            JobStrategy.validate(&j)
        );
        let mut new = j.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        assert!(msgs(JobStrategy.validate_update(&new, &j))[0]
            .starts_with("spec.template: Invalid value: "));
        assert_eq!(
            JobStrategy.selectable_fields(&j),
            vec![("status.successful", "0".to_string())]
        );
    }

    #[test]
    fn job_restart_policy() {
        let mut j = job();
        if let Some(s) = j
            .pointer_mut("/spec/template/spec")
            .and_then(Value::as_object_mut)
        {
            s.remove("restartPolicy");
        }
        JobStrategy.default(&mut j);
        JobStrategy.prepare_for_create(&mut j);
        assert_eq!(
            msgs(JobStrategy.validate(&j)),
            vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
        );
    }

    #[test]
    fn cron() {
        assert!(parse_cron("*/5 * * * *").is_ok());
        assert!(parse_cron("0 0 1 jan-mar mon").is_ok());
        assert!(parse_cron("@hourly").is_ok());
        assert_eq!(
            parse_cron("foo"),
            Err("expected exactly 5 fields, found 1: [foo]".into())
        );
        assert_eq!(
            parse_cron("61 * * * *"),
            Err("end of range (61) above maximum (59): 61".into())
        );
        let mut c = json!({"metadata": {"name": "c", "namespace": "d"}, "spec": {"schedule": "", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x"}], "restartPolicy": "OnFailure"}}}}}});
        CronJobStrategy.default(&mut c);
        assert_eq!(c["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(
            msgs(CronJobStrategy.validate(&c)),
            vec!["spec.schedule: Required value"]
        );
    }
}
