//! Cron schedules as upstream's CronJob controller reads them (robfig/cron's
//! `ParseStandard`): five fields (minute, hour, day of month, month, day of week) with
//! `*`, `?`, lists, ranges, steps and month/day names, the `@yearly`... descriptors and
//! `@every <duration>`; evaluated in a time zone.

use k8s_openapi::jiff::civil::{Date, DateTime, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp, ToSpan};

/// A schedule that does not parse, with robfig's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// Bit 63 of a field: it was `*` or `?` (matters for day-of-month/day-of-week).
const STAR: u64 = 1 << 63;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Bit sets of the allowed values of each field.
    Fields {
        /// Minutes 0-59.
        minute: u64,
        /// Hours 0-23.
        hour: u64,
        /// Days of month 1-31.
        dom: u64,
        /// Months 1-12.
        month: u64,
        /// Days of week 0-6 (Sunday = 0).
        dow: u64,
    },
    /// `@every d`: every `d` after the previous time.
    Every(SignedDuration),
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn number(s: &str, names: &[&str], base: u32) -> Result<u32, ParseError> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + base);
    }
    s.parse::<u32>().map_err(|_| {
        ParseError(format!(
            "failed to parse int from {s}: strconv.Atoi: parsing {s:?}: invalid syntax"
        ))
    })
}

/// One field: comma-separated `*`, `?`, `a`, `a-b`, each optionally `/step`.
fn field(expr: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<u64, ParseError> {
    let mut bits = 0u64;
    for part in expr.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(number(s, &[], 0)?)),
            None => (part, None),
        };
        let (mut lo, mut hi, mut extra) = (min, max, 0);
        if range == "*" || range == "?" {
            extra = STAR;
        } else if let Some((a, b)) = range.split_once('-') {
            lo = number(a, names, base)?;
            hi = number(b, names, base)?;
        } else {
            lo = number(range, names, base)?;
            hi = if step.is_some() { max } else { lo };
        }
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err(ParseError(format!(
                "step of range should be a positive number: {part}"
            )));
        }
        if step > 1 {
            extra = 0;
        }
        if lo < min {
            return Err(ParseError(format!(
                "beginning of range ({lo}) below minimum ({min}): {part}"
            )));
        }
        if hi > max {
            return Err(ParseError(format!(
                "end of range ({hi}) above maximum ({max}): {part}"
            )));
        }
        if lo > hi {
            return Err(ParseError(format!(
                "beginning of range ({lo}) beyond end of range ({hi}): {part}"
            )));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
        bits |= extra;
    }
    Ok(bits)
}

/// A Go duration such as `1h30m` or `90s`.
fn go_duration(s: &str) -> Option<SignedDuration> {
    let mut total = 0f64;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        any = true;
    }
    (any && num.is_empty()).then(|| SignedDuration::from_secs_f64(total))
}

impl Schedule {
    /// Parses `spec`. `TZ=`/`CRON_TZ=` prefixes are refused: `spec.timeZone` is the way.
    pub fn parse(spec: &str) -> Result<Self, ParseError> {
        let s = spec.trim();
        if s.starts_with("TZ=") || s.starts_with("CRON_TZ=") {
            return Err(ParseError(
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into(),
            ));
        }
        if let Some(d) = s.strip_prefix("@every ") {
            return match go_duration(d.trim()) {
                Some(d) if d.as_secs() >= 1 => Ok(Schedule::Every(d)),
                Some(_) => Ok(Schedule::Every(SignedDuration::from_secs(1))),
                None => Err(ParseError(format!(
                    "failed to parse duration {s}: time: invalid duration {d:?}"
                ))),
            };
        }
        let expanded = match s {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => {
                return Err(ParseError(format!("unrecognized descriptor: {s}")))
            }
            s => s,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(ParseError(format!(
                "expected exactly 5 fields, found {}: [{}]",
                f.len(),
                f.join(" ")
            )));
        }
        Ok(Schedule::Fields {
            minute: field(f[0], 0, 59, &[], 0)?,
            hour: field(f[1], 0, 23, &[], 0)?,
            dom: field(f[2], 1, 31, &[], 0)?,
            month: field(f[3], 1, 12, MONTHS, 1)?,
            dow: field(f[4], 0, 6, DAYS, 0)?,
        })
    }

    /// The first time after `after` (strictly) the schedule fires, in `tz`; None when
    /// it never does within five years.
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let (minute, hour, dom, month, dow) = match self {
            Schedule::Every(d) => {
                // robfig rounds the start down to the second and adds the delay.
                let secs = after.as_second();
                return Timestamp::from_second(secs).ok()?.checked_add(*d).ok();
            }
            Schedule::Fields {
                minute,
                hour,
                dom,
                month,
                dow,
            } => (*minute, *hour, *dom, *month, *dow),
        };
        let has = |bits: u64, v: i8| bits & (1u64 << (v as u32)) != 0;
        let day_matches = |d: Date| {
            let dom_ok = has(dom, d.day());
            let dow_ok = has(dow, d.weekday().to_sunday_zero_offset());
            if dom & STAR != 0 || dow & STAR != 0 {
                dom_ok && dow_ok
            } else {
                dom_ok || dow_ok
            }
        };
        // Start at the next whole minute of local time.
        let local = tz.to_datetime(after);
        let mut t: DateTime = local
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = local.year().saturating_add(5);
        while t.year() <= limit {
            if !has(month, t.month()) {
                let first = Date::new(t.year(), t.month(), 1).ok()?;
                t = first
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(Time::midnight());
                continue;
            }
            if !day_matches(t.date()) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(Time::midnight());
                continue;
            }
            if !has(hour, t.hour()) {
                t = t
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(minute, t.minute()) {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            let at = tz.to_ambiguous_timestamp(t).compatible().ok()?;
            if at > after {
                return Some(at);
            }
            t = t.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn fields_and_descriptors() {
        let utc = TimeZone::UTC;
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.next(ts("2024-01-01T10:07:30Z"), &utc),
            Some(ts("2024-01-01T10:15:00Z"))
        );
        let s = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            s.next(ts("2024-01-01T10:00:00Z"), &utc),
            Some(ts("2024-01-01T11:00:00Z"))
        );
        let s = Schedule::parse("@daily").unwrap();
        assert_eq!(
            s.next(ts("2024-01-01T10:00:00Z"), &utc),
            Some(ts("2024-01-02T00:00:00Z"))
        );
        let s = Schedule::parse("30 9 * * mon-fri").unwrap();
        // 2024-01-06 is a Saturday.
        assert_eq!(
            s.next(ts("2024-01-05T09:30:00Z"), &utc),
            Some(ts("2024-01-08T09:30:00Z"))
        );
        let s = Schedule::parse("0 0 29 feb *").unwrap();
        assert_eq!(
            s.next(ts("2024-03-01T00:00:00Z"), &utc),
            Some(ts("2028-02-29T00:00:00Z"))
        );
        // Day of month OR day of week when both are restricted.
        let s = Schedule::parse("0 0 13 * 5").unwrap();
        assert_eq!(
            s.next(ts("2024-01-01T00:00:00Z"), &utc),
            Some(ts("2024-01-05T00:00:00Z"))
        );
        let s = Schedule::parse("@every 90s").unwrap();
        assert_eq!(
            s.next(ts("2024-01-01T00:00:00Z"), &utc),
            Some(ts("2024-01-01T00:01:30Z"))
        );
    }

    #[test]
    fn time_zones() {
        let ny = TimeZone::get("America/New_York").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        assert_eq!(
            s.next(ts("2024-01-01T00:00:00Z"), &ny),
            Some(ts("2024-01-01T14:00:00Z"))
        );
        assert_eq!(
            s.next(ts("2024-07-01T00:00:00Z"), &ny),
            Some(ts("2024-07-01T13:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in [
            "* * * *",
            "61 * * * *",
            "* * * * 8",
            "@often",
            "5-1 * * * *",
            "TZ=UTC * * * * *",
            "x * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Schedule::parse("* * * *").unwrap_err().to_string(),
            "expected exactly 5 fields, found 4: [* * * *]"
        );
    }
}
