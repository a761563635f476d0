//! `GET /containerLogs/<ns>/<pod>/<container>` from Docker's logs: follow, previous,
//! tailLines, sinceSeconds / sinceTime, timestamps, limitBytes.

use bollard::query_parameters::LogsOptionsBuilder;
use futures::StreamExt;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};

use super::{pods, text, Body, Context};

/// Query options of a log request (upstream `PodLogOptions`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<chrono::DateTime<chrono::Utc>>,
    pub limit_bytes: Option<i64>,
}

impl LogOptions {
    pub(super) fn from_query(query: &str) -> Result<Self, String> {
        let mut o = LogOptions::default();
        let truthy = |v: &str| matches!(v, "1" | "true" | "True" | "TRUE");
        let int = |k: &str, v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("invalid value {v:?} for {k}: not an integer"))
        };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "follow" => o.follow = truthy(&v),
                "previous" => o.previous = truthy(&v),
                "timestamps" => o.timestamps = truthy(&v),
                "tailLines" => o.tail_lines = Some(int("tailLines", &v)?),
                "sinceSeconds" => o.since_seconds = Some(int("sinceSeconds", &v)?),
                "limitBytes" => o.limit_bytes = Some(int("limitBytes", &v)?),
                "sinceTime" => {
                    let t = chrono::DateTime::parse_from_rfc3339(&v)
                        .map_err(|e| format!("invalid value {v:?} for sinceTime: {e}"))?;
                    o.since_time = Some(t.with_timezone(&chrono::Utc));
                }
                _ => {}
            }
        }
        Ok(o)
    }

    /// Docker's `since`, in Unix seconds (0: from the start).
    fn since(&self, now: chrono::DateTime<chrono::Utc>) -> i32 {
        let t = match (self.since_seconds, self.since_time) {
            (Some(s), _) => Some(now.timestamp() - s),
            (None, Some(t)) => Some(t.timestamp()),
            (None, None) => None,
        };
        t.map(|t| t.clamp(0, i32::MAX as i64) as i32).unwrap_or(0)
    }
}

pub(super) async fn serve(
    ctx: &Context,
    namespace: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Response<Body> {
    let opts = match LogOptions::from_query(query) {
        Ok(o) => o,
        Err(m) => return text(StatusCode::BAD_REQUEST, m),
    };
    let all = match pods::containers(ctx, namespace, pod, Some(container)).await {
        Ok(a) => a,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot list containers: {e}"),
            )
        }
    };
    let id = if opts.previous {
        match all.get(1) {
            Some(c) => c.id.clone(),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                )
            }
        }
    } else {
        match all.first() {
            Some(c) => c.id.clone(),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("container {container:?} in pod {pod:?} is not available"),
                )
            }
        }
    };
    let mut b = LogsOptionsBuilder::new()
        .stdout(true)
        .stderr(true)
        .follow(opts.follow)
        .timestamps(opts.timestamps)
        .since(opts.since(chrono::Utc::now()));
    b = match opts.tail_lines {
        Some(n) if n >= 0 => b.tail(&n.to_string()),
        _ => b.tail("all"),
    };
    let stream = ctx.docker.logs(&id, Some(b.build()));
    // limitBytes: stop once that many bytes went out; an error ends the stream.
    let limit = opts.limit_bytes.filter(|n| *n > 0).map(|n| n as usize);
    let body = stream.scan(limit, |left, item| {
        let out = match (item, left.as_mut()) {
            (Err(e), _) => {
                tracing::debug!(error = %e, "container log stream ended");
                return std::future::ready(None);
            }
            (Ok(_), Some(0)) => return std::future::ready(None),
            (Ok(o), Some(n)) => {
                let b = o.into_bytes();
                let take = b.len().min(*n);
                *n -= take;
                b.slice(..take)
            }
            (Ok(o), None) => o.into_bytes(),
        };
        std::future::ready(Some(Ok::<_, std::io::Error>(hyper::body::Frame::data(out))))
    });
    let mut resp = Response::new(BodyExt::boxed_unsync(StreamBody::new(body)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_options_parse_every_field() {
        let o = LogOptions::from_query(
            "follow=true&previous=1&timestamps=true&tailLines=5&sinceSeconds=10&limitBytes=7",
        )
        .expect("parse");
        assert!(o.follow && o.previous && o.timestamps);
        assert_eq!(o.tail_lines, Some(5));
        assert_eq!(o.limit_bytes, Some(7));
        let now = chrono::DateTime::from_timestamp(1000, 0).expect("time");
        assert_eq!(o.since(now), 990);
        let o = LogOptions::from_query("sinceTime=2024-01-02T03:04:05Z").expect("parse");
        assert_eq!(o.since(now), 1704164645);
        assert!(LogOptions::from_query("tailLines=x").is_err());
    }
}
