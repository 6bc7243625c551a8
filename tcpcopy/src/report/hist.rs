//! Latency histograms as text in the report JSON: HdrHistogram's V2 serialized form (the
//! encoding every HdrHistogram implementation reads), base64. `report merge` decodes them and
//! adds them, so that the merged percentiles are exactly those of one run over all samples.
//!
//! Pure: bytes in, bytes out. Decoding never panics on bad input (an error names what failed).

use super::{CurvePoint, Percentiles};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use hdrhistogram::Histogram;
use std::time::Duration;

/// A histogram field of a report that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("histogram `{field}`: {what}")]
pub struct HistError {
    /// The field (`histograms.test_latency`, `endpoints[GET /a].test`...).
    pub field: String,
    /// What is wrong with it.
    pub what: String,
}

/// `h` in V2 form, base64 (standard alphabet, padded).
pub fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Writing into a Vec cannot fail; a histogram V2 cannot express (none of ours) gives "".
    if V2Serializer::new().serialize(h, &mut buf).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// Reads what [`encode`] wrote; `field` names it in the error.
pub fn decode(field: &str, text: &str) -> Result<Histogram<u64>, HistError> {
    let err = |what: String| HistError {
        field: field.to_string(),
        what,
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| err(format!("not base64: {e}")))?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| err(format!("not an HdrHistogram V2 histogram: {e:?}")))
}

/// Adds `b` into `a` (same bounds, or `a` grows to hold `b`'s values).
pub fn add(field: &str, a: &mut Histogram<u64>, b: &Histogram<u64>) -> Result<(), HistError> {
    a.add(b).map_err(|e| HistError {
        field: field.to_string(),
        what: format!("cannot be added: {e:?}"),
    })
}

/// The run totals' histogram: microseconds, 1 µs .. 1 h, 3 significant digits.
pub fn new() -> Histogram<u64> {
    // Microseconds, 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds")
}

/// A duration in the histograms' unit (µs), clamped to their bounds.
pub fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 3_600_000_000)
}

/// The report's latency figures (ms) of `h`.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// The percentile curve of `h`, evenly spaced in nines.
pub fn curve(h: &Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    // Evenly spaced in "nines": 0 %, 90 %, 99 %, 99.9 %, 99.99 %.
    (0..=80)
        .map(|i| {
            let nines = f64::from(i) * 0.05;
            let q = 1.0 - 10f64.powf(-nines);
            CurvePoint {
                percentile: q * 100.0,
                ms: h.value_at_quantile(q) as f64 / 1000.0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hist(sigfig: u8) -> Histogram<u64> {
        Histogram::new_with_bounds(1, 3_600_000_000, sigfig).unwrap()
    }

    #[test]
    fn round_trip_and_bad_text() {
        let mut h = hist(3);
        for v in [1, 5, 1000, 123_456, 3_600_000_000] {
            h.record(v).unwrap();
        }
        let back = decode("x", &encode(&h)).unwrap();
        assert_eq!(back, h);
        assert_eq!(decode("x", &encode(&hist(3))).unwrap().len(), 0);
        let e = decode("histograms.slip", "!!!").unwrap_err();
        assert!(e
            .to_string()
            .starts_with("histogram `histograms.slip`: not base64"));
        let e = decode("h", "aGVsbG8gd29ybGQ=").unwrap_err();
        assert!(e.to_string().contains("not an HdrHistogram"), "{e}");
    }

    proptest! {
        /// Two workers' histograms, each through the report's text form, added: the same
        /// histogram, and the same percentiles, as one histogram of all the samples.
        #[test]
        fn merged_equals_one_histogram_of_all_samples(
            a in proptest::collection::vec(1u64..3_600_000_000, 0..400),
            b in proptest::collection::vec(1u64..3_600_000_000, 0..400),
            sigfig in 2u8..=3,
        ) {
            let (mut ha, mut hb, mut all) = (hist(sigfig), hist(sigfig), hist(sigfig));
            for &v in &a { ha.record(v).unwrap(); all.record(v).unwrap(); }
            for &v in &b { hb.record(v).unwrap(); all.record(v).unwrap(); }
            let mut merged = decode("a", &encode(&ha)).unwrap();
            add("b", &mut merged, &decode("b", &encode(&hb)).unwrap()).unwrap();
            prop_assert_eq!(merged.len(), all.len());
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                prop_assert_eq!(merged.value_at_quantile(q), all.value_at_quantile(q));
            }
            prop_assert_eq!(merged.max(), all.max());
            prop_assert_eq!(merged.mean(), all.mean());
            prop_assert_eq!(merged, all);
        }
    }
}
