//! Prometheus text (and OpenMetrics, which mesh-proxy serves) into samples, counter deltas,
//! and `histogram_quantile` exactly as Prometheus computes it. Pure functions; the parser is
//! bounded, since a proxy's output is not ours to trust.

use std::cmp::Ordering;

/// At most this many samples are kept from one scrape; the rest are counted, not stored.
pub const MAX_SAMPLES: usize = 50_000;
/// A label value longer than this (bytes) makes its line skipped.
pub const MAX_LABEL_VALUE: usize = 1024;
/// A line with more labels than this is skipped.
pub const MAX_LABELS: usize = 64;

/// One sample: metric name, labels sorted by name, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Full name as exposed (`istio_requests_total`, `..._bucket`).
    pub name: String,
    /// Labels, sorted by name.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// What a scrape's text yielded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    /// The samples kept, in the order of the text.
    pub samples: Vec<Sample>,
    /// Lines that could not be read (or broke a bound), skipped.
    pub invalid: usize,
    /// Samples beyond [`MAX_SAMPLES`], dropped.
    pub dropped: usize,
}

/// Parses exposition text, keeping the samples whose metric name `keep` accepts (so the
/// thousands of series an Envoy exposes do not count against the bound). Comments, `# TYPE`,
/// `# HELP` and `# EOF` are skipped; timestamps and exemplars after the value are ignored.
pub fn parse(text: &str, keep: impl Fn(&str) -> bool) -> Parsed {
    let mut parsed = Parsed::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some(sample) if keep(&sample.name) => {
                if parsed.samples.len() < MAX_SAMPLES {
                    parsed.samples.push(sample);
                } else {
                    parsed.dropped += 1;
                }
            }
            Some(_) => {}
            None => parsed.invalid += 1,
        }
    }
    parsed
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(line.len(), |(i, _)| i);
    if name_end == 0 {
        return None;
    }
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    let value = rest.split_whitespace().next()?;
    let value = parse_value(value)?;
    labels.sort();
    Some(Sample { name: name.to_owned(), labels, value })
}

/// Reads `name="value",...}`; returns what follows the `}`.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut Vec<(String, String)>) -> Option<&'a str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Some(after);
        }
        if labels.len() >= MAX_LABELS {
            return None;
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return None;
        }
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
            if value.len() > MAX_LABEL_VALUE {
                return None;
            }
        };
        labels.push((name.to_owned(), value));
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// A sample value or a bucket bound: a float, `NaN`, `+Inf`, `-Inf`.
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

/// How much a counter grew between two scrapes. A value lower than before means the counter
/// was reset (the proxy restarted) and counts from zero, as Prometheus' `rate` takes it.
pub fn counter_delta(previous: f64, current: f64) -> f64 {
    if !previous.is_finite() || !current.is_finite() {
        return 0.0;
    }
    if current < previous { current } else { current - previous }
}

/// One histogram bucket: upper bound (`le`) and cumulative count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Upper bound, `+Inf` for the last.
    pub le: f64,
    /// Observations less than or equal to `le`.
    pub count: f64,
}

/// The `q` quantile of a classic histogram, exactly as Prometheus' `histogram_quantile`
/// (`bucketQuantile` in promql/quantile.go): buckets sorted by bound and those of the same
/// bound added up, counts made monotonic; rank `q * total`; linear interpolation inside the
/// bucket the rank falls in, from 0 for the first bucket unless its bound is `<= 0` (then that
/// bound); the highest finite bound when the rank falls in `+Inf`. NaN when there is no
/// observation, no `+Inf` bucket or fewer than two buckets; `q < 0` is -Inf and `q > 1` +Inf.
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut sorted: Vec<Bucket> = buckets.to_vec();
    sorted.sort_by(|a, b| a.le.partial_cmp(&b.le).unwrap_or(Ordering::Equal));
    if sorted.last().is_none_or(|b| b.le != f64::INFINITY) {
        return f64::NAN;
    }
    let mut merged: Vec<Bucket> = Vec::with_capacity(sorted.len());
    for b in sorted {
        match merged.last_mut() {
            Some(last) if last.le == b.le => last.count += b.count,
            _ => merged.push(b),
        }
    }
    correct_precision_errors(&mut merged, 1e-12);
    let mut max = merged[0].count;
    for b in &mut merged[1..] {
        if b.count > max {
            max = b.count;
        } else {
            b.count = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let search = &merged[..merged.len() - 1];
    let b = search.iter().position(|b| b.count >= rank).unwrap_or(search.len());
    if b == merged.len() - 1 {
        return merged[merged.len() - 2].le;
    }
    if b == 0 && merged[0].le <= 0.0 {
        return merged[0].le;
    }
    let (mut start, end, mut count) = (0.0, merged[b].le, merged[b].count);
    if b > 0 {
        start = merged[b - 1].le;
        count -= merged[b - 1].count;
        rank -= merged[b - 1].count;
    }
    start + (end - start) * (rank / count)
}

/// Prometheus' `correctPrecisionErrors`: a count that differs from the one before by a
/// relative `tolerance` or less is taken as equal to it.
fn correct_precision_errors(buckets: &mut [Bucket], tolerance: f64) {
    let mut previous = buckets[0].count;
    for b in &mut buckets[1..] {
        let delta = (b.count - previous).abs();
        if delta == 0.0 {
            continue;
        }
        if delta / b.count <= tolerance {
            b.count = previous;
        } else {
            previous = b.count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(_: &str) -> bool {
        true
    }

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs.iter().map(|&(le, count)| Bucket { le, count }).collect()
    }

    const INF: f64 = f64::INFINITY;

    #[test]
    fn parses_openmetrics_from_prometheus_client() {
        let text = "# HELP istio_requests Requests.\n\
            # TYPE istio_requests counter\n\
            istio_requests_total{reporter=\"destination\",response_code=\"200\"} 7\n\
            istio_request_duration_milliseconds_bucket{reporter=\"destination\",le=\"+Inf\"} 7\n\
            istio_request_duration_milliseconds_sum{reporter=\"destination\"} 12.5\n\
            # EOF\n";
        let parsed = parse(text, all);
        assert_eq!(parsed.invalid, 0);
        assert_eq!(
            parsed.samples[0],
            Sample {
                name: "istio_requests_total".into(),
                labels: vec![
                    ("reporter".into(), "destination".into()),
                    ("response_code".into(), "200".into())
                ],
                value: 7.0
            }
        );
        assert_eq!(parsed.samples[1].label("le"), Some("+Inf"));
        assert_eq!(parsed.samples[2].value, 12.5);
    }

    #[test]
    fn parses_classic_text_with_escapes_timestamps_and_exemplars() {
        let text = "envoy_server_uptime 42 1700000000000\n\
            m{a=\"x\\\"y\\\\z\\n\", b = \"1\",} 1.5e3\n\
            m{a=\"q\"} NaN # {trace_id=\"abc\"} 1.0\n\
            no_labels +Inf\n";
        let parsed = parse(text, all);
        assert_eq!(parsed.invalid, 0);
        assert_eq!(parsed.samples[0].value, 42.0);
        assert_eq!(parsed.samples[1].label("a"), Some("x\"y\\z\n"));
        assert_eq!(parsed.samples[1].label("b"), Some("1"));
        assert_eq!(parsed.samples[1].value, 1500.0);
        assert!(parsed.samples[2].value.is_nan());
        assert_eq!(parsed.samples[3].value, INF);
    }

    #[test]
    fn bad_lines_are_counted_and_skipped() {
        let long = "v".repeat(MAX_LABEL_VALUE + 1);
        let text = format!(
            "ok 1\n{{a=\"b\"}} 1\nm{{a=\"unterminated}} 1\nm{{a=\"{long}\"}} 1\nm 1x\nm\nok 2\n"
        );
        let parsed = parse(&text, all);
        assert_eq!(parsed.invalid, 5);
        assert_eq!(parsed.samples.iter().map(|s| s.value).collect::<Vec<_>>(), [1.0, 2.0]);
    }

    #[test]
    fn keeps_only_what_is_asked_and_at_most_the_bound() {
        let mut text = String::from("envoy_other 1\n");
        for i in 0..MAX_SAMPLES + 3 {
            text.push_str(&format!("istio_x{{i=\"{i}\"}} 1\n"));
        }
        let parsed = parse(&text, |name| name.starts_with("istio_"));
        assert_eq!(parsed.samples.len(), MAX_SAMPLES);
        assert_eq!(parsed.dropped, 3);
        assert_eq!(parsed.samples[0].label("i"), Some("0"));
    }

    #[test]
    fn counter_deltas_count_a_reset_from_zero() {
        assert_eq!(counter_delta(100.0, 130.0), 30.0);
        assert_eq!(counter_delta(100.0, 100.0), 0.0);
        // The proxy restarted and served 40 requests since: 40, not -60.
        assert_eq!(counter_delta(100.0, 40.0), 40.0);
        assert_eq!(counter_delta(f64::NAN, 40.0), 0.0);
    }

    #[test]
    fn quantile_interpolates_inside_the_bucket() {
        // Cumulative: 10 in (0,5], 20 in (5,10], 70 in (10,25], 0 above. Total 100.
        let b = buckets(&[(5.0, 10.0), (10.0, 30.0), (25.0, 100.0), (INF, 100.0)]);
        // q=0.5: rank 50, first bucket with count >= 50 is le=25 (after 30 at le=10):
        // 10 + (25-10) * (50-30)/(100-30) = 10 + 15 * 20/70 = 14.285714...
        assert_eq!(histogram_quantile(0.5, &b), 10.0 + 15.0 * (20.0 / 70.0));
        // q=0.05: rank 5 in the first bucket, from 0: 0 + 5 * 5/10 = 2.5.
        assert_eq!(histogram_quantile(0.05, &b), 2.5);
        // q=0.3: rank 30 reaches le=10 exactly: 5 + 5 * (30-10)/(30-10) = 10.
        assert_eq!(histogram_quantile(0.3, &b), 10.0);
        // q=1: rank 100 is reached at le=25: 10 + 15 * 70/70 = 25.
        assert_eq!(histogram_quantile(1.0, &b), 25.0);
        // q=0: rank 0, the first bucket (count 10 >= 0): 0 + 5 * 0/10 = 0.
        assert_eq!(histogram_quantile(0.0, &b), 0.0);
    }

    #[test]
    fn quantile_in_the_inf_bucket_is_the_highest_finite_bound() {
        // 90 observations at or under 100, 10 above: q=0.95 (rank 95) falls in +Inf.
        let b = buckets(&[(50.0, 60.0), (100.0, 90.0), (INF, 100.0)]);
        assert_eq!(histogram_quantile(0.95, &b), 100.0);
        // q=0.9: rank 90 is reached at le=100: 50 + 50 * (90-60)/(90-60) = 100.
        assert_eq!(histogram_quantile(0.9, &b), 100.0);
        // q=0.75: rank 75: 50 + 50 * (75-60)/30 = 75.
        assert_eq!(histogram_quantile(0.75, &b), 75.0);
    }

    #[test]
    fn quantile_special_cases() {
        let b = buckets(&[(1.0, 1.0), (INF, 2.0)]);
        assert_eq!(histogram_quantile(-0.1, &b), f64::NEG_INFINITY);
        assert_eq!(histogram_quantile(1.1, &b), INF);
        assert!(histogram_quantile(f64::NAN, &b).is_nan());
        // No observation in the window.
        assert!(histogram_quantile(0.5, &buckets(&[(1.0, 0.0), (INF, 0.0)])).is_nan());
        // No +Inf bucket, or no bucket at all, or only +Inf.
        assert!(histogram_quantile(0.5, &buckets(&[(1.0, 1.0)])).is_nan());
        assert!(histogram_quantile(0.5, &[]).is_nan());
        assert!(histogram_quantile(0.5, &buckets(&[(INF, 3.0)])).is_nan());
        // Even with no observation, q out of range is infinite (checked first).
        assert_eq!(histogram_quantile(2.0, &[]), INF);
    }

    #[test]
    fn quantile_with_a_first_bound_at_or_below_zero() {
        // 4 of 8 at or below -1: rank 2 (q=0.25) falls in the first bucket, whose bound is
        // returned as it is rather than interpolated from 0.
        let b = buckets(&[(-1.0, 4.0), (1.0, 8.0), (INF, 8.0)]);
        assert_eq!(histogram_quantile(0.25, &b), -1.0);
        // q=0.75: rank 6 in (-1,1]: -1 + 2 * (6-4)/(8-4) = 0.
        assert_eq!(histogram_quantile(0.75, &b), 0.0);
    }

    #[test]
    fn quantile_sorts_merges_and_forces_monotonic_counts() {
        // Two series' buckets of the same bounds, unsorted: summed per bound as
        // `sum by (le)` then histogram_quantile: le=10: 3+1=4, le=20: 5+3=8, +Inf: 5+3=8.
        let b =
            buckets(&[(INF, 5.0), (20.0, 5.0), (10.0, 3.0), (INF, 3.0), (20.0, 3.0), (10.0, 1.0)]);
        // q=0.5: rank 4, reached at le=10: 0 + 10 * 4/4 = 10.
        assert_eq!(histogram_quantile(0.5, &b), 10.0);
        // q=0.75: rank 6 in (10,20]: 10 + 10 * (6-4)/(8-4) = 15.
        assert_eq!(histogram_quantile(0.75, &b), 15.0);
        // A count lower than the one below it is raised to it: le=20 is taken as 6.
        let b = buckets(&[(10.0, 6.0), (20.0, 2.0), (INF, 12.0)]);
        // q=0.5: rank 6, reached at le=10: 0 + 10 * 6/6 = 10.
        assert_eq!(histogram_quantile(0.5, &b), 10.0);
        // q=0.6: rank 7.2: le=10 (6) and le=20 (6 after the envelope) are short, so +Inf:
        // the highest finite bound, 20.
        assert_eq!(histogram_quantile(0.6, &b), 20.0);
    }
}
