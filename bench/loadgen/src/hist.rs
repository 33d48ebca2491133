//! A log-linear latency histogram (HDR style): values below 32 ns get a bucket
//! each, above that every power of two is split into 32 equal buckets, so a
//! reported percentile is within 1/64 (1.6 %) of the true value. Recording is
//! a few arithmetic instructions and one increment; no allocation after `new`.

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = (64 - SUB_BITS as usize + 1) * SUB;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

pub fn bucket_of(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= SUB_BITS
    let shift = e - SUB_BITS;
    (shift as usize + 1) * SUB + ((v >> shift) as usize - SUB)
}

/// The smallest and largest value that fall into bucket `b`.
pub fn bucket_bounds(b: usize) -> (u64, u64) {
    if b < SUB {
        return (b as u64, b as u64);
    }
    let shift = (b / SUB - 1) as u32;
    let lo = ((SUB + b % SUB) as u64) << shift;
    (lo, lo + ((1u64 << shift) - 1))
}

impl Hist {
    pub fn new() -> Hist {
        Hist { counts: vec![0; BUCKETS], n: 0, sum: 0, min: u64::MAX, max: 0 }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[bucket_of(v)] += 1;
        self.n += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.n
    }

    pub fn max(&self) -> Option<u64> {
        (self.n > 0).then_some(self.max)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum as f64 / self.n as f64)
    }

    /// The value at percentile `p` (0-100): the middle of the bucket holding
    /// the rank-th smallest value, clamped to the exact min and max seen.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let rank = (rank_f(p, self.n as f64) as u64).clamp(1, self.n);
        let mut seen = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bucket_bounds(b);
                return Some((lo + (hi - lo) / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }
}

/// Nearest rank for percentile `p` of `n` values (1-based; tolerant of float error).
fn rank_f(p: f64, n: f64) -> f64 {
    (p * n / 100.0 - 1e-9).ceil()
}

/// Exact percentile of a small sample (the hold mode's probes), nearest-rank.
pub fn exact_percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = (rank_f(p, n as f64) as usize).clamp(1, n);
    Some(sorted[rank - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_monotonic() {
        let mut prev_hi = None;
        for b in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(b);
            assert!(lo <= hi);
            if let Some(p) = prev_hi {
                assert_eq!(lo, p + 1, "bucket {b} starts right after the previous one");
            }
            assert_eq!(bucket_of(lo), b);
            assert_eq!(bucket_of(hi), b);
            prev_hi = Some(hi);
        }
        assert_eq!(prev_hi, Some(u64::MAX));
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn relative_error_is_small() {
        for v in [33u64, 100, 1_000, 12_345, 999_999, 123_456_789, 10_000_000_000] {
            let (lo, hi) = bucket_bounds(bucket_of(v));
            assert!(lo <= v && v <= hi);
            let mid = lo + (hi - lo) / 2;
            let err = (mid as f64 - v as f64).abs() / v as f64;
            assert!(err <= 1.0 / 32.0, "v={v} mid={mid} err={err}");
        }
    }

    #[test]
    fn percentiles_of_uniform_values() {
        let mut h = Hist::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000); // 1 us .. 10 ms
        }
        let near = |got: u64, want: f64| (got as f64 - want).abs() / want < 0.02;
        assert!(near(h.percentile(50.0).unwrap(), 5_000_000.0), "{:?}", h.percentile(50.0));
        assert!(near(h.percentile(99.0).unwrap(), 9_900_000.0), "{:?}", h.percentile(99.0));
        assert_eq!(h.percentile(100.0), Some(10_000_000));
        assert_eq!(h.percentile(0.0), Some(1000), "clamped to the minimum");
        assert_eq!(h.max(), Some(10_000_000));
        assert_eq!(h.count(), 10_000);
        assert!((h.mean().unwrap() - 5_000_500.0).abs() < 1.0);
    }

    #[test]
    fn skewed_distribution_and_merge() {
        let mut a = Hist::new();
        let mut b = Hist::new();
        for _ in 0..990 {
            a.record(20_000);
        }
        for _ in 0..10 {
            b.record(5_000_000);
        }
        a.merge(&b);
        assert_eq!(a.count(), 1000);
        let p50 = a.percentile(50.0).unwrap();
        assert!((19_500..=20_500).contains(&p50), "{p50}");
        let p99 = a.percentile(99.0).unwrap();
        assert!((19_500..=20_500).contains(&p99), "rank 990 is still the fast group: {p99}");
        let p999 = a.percentile(99.9).unwrap();
        assert!((4_900_000..=5_000_000).contains(&p999), "{p999}");
        assert_eq!(a.max(), Some(5_000_000));
    }

    #[test]
    fn empty_and_single() {
        let h = Hist::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.max(), None);
        let mut h = Hist::new();
        h.record(777);
        assert_eq!(h.percentile(50.0), Some(777));
        assert_eq!(h.percentile(99.0), Some(777));
    }

    #[test]
    fn exact_percentiles() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(exact_percentile(&v, 50.0), Some(10));
        assert_eq!(exact_percentile(&v, 99.0), Some(20));
        assert_eq!(exact_percentile(&v, 100.0), Some(20));
        assert_eq!(exact_percentile(&[], 50.0), None);
        assert_eq!(exact_percentile(&[5], 0.0), Some(5));
    }
}
