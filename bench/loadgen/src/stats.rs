//! Counters of one run (merged across threads) and the JSON line printed at the end.

use crate::hist::{exact_percentile, Hist};
use crate::net::strerror;

/// What went wrong, by kind. Every failure lands in exactly one counter.
#[derive(Default, Clone, Debug)]
pub struct Errors {
    pub refused: u64,
    pub reset: u64,
    pub timeout: u64,
    /// The server closed a connection before the reply started (persistent).
    pub closed: u64,
    /// Local resource trouble: no source address/port, out of descriptors, ...
    pub local: u64,
    /// A TLS failure: the server's records or certificate refused, or TCP closed without close_notify.
    pub tls: u64,
    pub other: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.closed + self.local + self.tls + self.other
    }

    fn merge(&mut self, o: &Errors) {
        self.refused += o.refused;
        self.reset += o.reset;
        self.timeout += o.timeout;
        self.closed += o.closed;
        self.local += o.local;
        self.tls += o.tls;
        self.other += o.other;
    }
}

#[derive(Default)]
pub struct Stats {
    pub ops: u64,
    pub bad_replies: u64,
    pub lost: u64,
    /// UDP replies that came after their request had been given up as lost.
    pub late: u64,
    pub bytes: u64,
    pub errors: Errors,
    pub hist: Hist,
    pub src_retries: u64,
    /// Connections opened again after a failure (persistent).
    pub reconnects: u64,
    /// The TLS handshakes by kind.
    pub kinds: crate::tls::Kinds,
    /// What the first TLS handshake negotiated, in words.
    pub negotiated: Option<String>,
    /// The first few failures in words, for stderr.
    pub first_errors: Vec<String>,
}

const KEEP_MESSAGES: usize = 5;

impl Stats {
    /// Counts a failed system call (errno `e`) made while `what`.
    pub fn error(&mut self, what: &str, e: i32) {
        match e {
            libc::ECONNREFUSED => self.errors.refused += 1,
            libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED | libc::ENOTCONN => self.errors.reset += 1,
            libc::ETIMEDOUT => self.errors.timeout += 1,
            libc::EADDRNOTAVAIL | libc::EADDRINUSE | libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => {
                self.errors.local += 1
            }
            _ => self.errors.other += 1,
        }
        self.note(|| format!("{what}: {}", strerror(e)));
    }

    /// Counts a TLS failure (`why` in words) met while `what`.
    pub fn tls(&mut self, what: &str, why: &dyn std::fmt::Display) {
        self.errors.tls += 1;
        self.note(|| format!("{what}: TLS: {why}"));
    }

    pub fn timeout(&mut self, what: &str) {
        self.errors.timeout += 1;
        self.note(|| format!("{what}: timed out"));
    }

    pub fn closed(&mut self, what: &str) {
        self.errors.closed += 1;
        self.note(|| format!("{what}: server closed the connection"));
    }

    pub fn bad(&mut self, what: &str) {
        self.bad_replies += 1;
        self.note(|| format!("bad reply: {what}"));
    }

    /// Keeps a message for stderr (the first few only) without counting anything.
    pub fn note(&mut self, msg: impl FnOnce() -> String) {
        if self.first_errors.len() < KEEP_MESSAGES {
            self.first_errors.push(msg());
        }
    }

    pub fn merge(&mut self, o: &Stats) {
        self.ops += o.ops;
        self.bad_replies += o.bad_replies;
        self.lost += o.lost;
        self.late += o.late;
        self.bytes += o.bytes;
        self.errors.merge(&o.errors);
        self.hist.merge(&o.hist);
        self.src_retries += o.src_retries;
        self.reconnects += o.reconnects;
        self.kinds.merge(&o.kinds);
        if self.negotiated.is_none() {
            self.negotiated.clone_from(&o.negotiated);
        }
        for m in &o.first_errors {
            if self.first_errors.len() < KEEP_MESSAGES {
                self.first_errors.push(m.clone());
            }
        }
    }
}

/// A JSON value, just the kinds the report needs.
#[derive(Clone)]
pub enum J {
    Int(u64),
    Num(Option<f64>),
    Str(String),
    Bool(bool),
    Obj(Vec<(&'static str, J)>),
}

fn num(v: f64, out: &mut String) {
    if v.is_finite() {
        // Enough digits for microseconds and rates, no exponent form.
        let s = format!("{v:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        out.push_str(if s.is_empty() || s == "-" { "0" } else { s });
    } else {
        out.push_str("null");
    }
}

fn escape(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl J {
    pub fn write(&self, out: &mut String) {
        match self {
            J::Int(v) => out.push_str(&v.to_string()),
            J::Num(Some(v)) => num(*v, out),
            J::Num(None) => out.push_str("null"),
            J::Str(s) => escape(s, out),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    escape(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// Where a report's latency figures come from.
pub enum Latency {
    /// The histogram in `Stats`.
    Hist,
    /// An exact sample (nanoseconds), for small counts like the hold mode's probes.
    Exact(Vec<u64>),
    /// The mode has no per-operation latency (stream).
    None,
}

/// The report of one run: the common fields in a fixed order, then the mode's own.
pub struct Report {
    pub mode: &'static str,
    pub seconds: f64,
    pub stats: Stats,
    pub extra: Vec<(&'static str, J)>,
    pub latency: Latency,
}

impl Report {
    /// p50, p90, p99, p99.9, max, mean; in nanoseconds.
    fn latencies(&self) -> [Option<f64>; 6] {
        const PS: [f64; 4] = [50.0, 90.0, 99.0, 99.9];
        let f = |v: Option<u64>| v.map(|x| x as f64);
        match &self.latency {
            Latency::Hist => {
                let h = &self.stats.hist;
                let p = PS.map(|p| f(h.percentile(p)));
                [p[0], p[1], p[2], p[3], f(h.max()), h.mean()]
            }
            Latency::Exact(v) => {
                let mut s = v.clone();
                s.sort_unstable();
                let p = PS.map(|p| f(exact_percentile(&s, p)));
                let mean = (!s.is_empty()).then(|| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64);
                [p[0], p[1], p[2], p[3], f(s.last().copied()), mean]
            }
            Latency::None => [None; 6],
        }
    }

    pub fn to_json(&self, cpu_s: f64) -> String {
        let s = &self.stats;
        let per_s = |v: u64| J::Num((self.seconds > 0.0).then(|| v as f64 / self.seconds));
        let l = self.latencies().map(|v| J::Num(v.map(|ns| ns / 1000.0)));
        let [p50, p90, p99, p999, max, mean] = l;
        let mut f: Vec<(&'static str, J)> = vec![
            ("mode", J::Str(self.mode.to_string())),
            ("ops", J::Int(s.ops)),
            ("seconds", J::Num(Some(self.seconds))),
            ("ops_per_s", per_s(s.ops)),
            ("p50_us", p50),
            ("p90_us", p90),
            ("p99_us", p99),
            ("p999_us", p999),
            ("max_us", max),
            ("mean_us", mean),
            ("errors", J::Int(s.errors.total())),
            ("bad_replies", J::Int(s.bad_replies)),
            ("lost", J::Int(s.lost)),
            ("bytes", J::Int(s.bytes)),
            ("bytes_per_s", per_s(s.bytes)),
            ("loadgen_cpu_s", J::Num(Some(cpu_s))),
            (
                "error_kinds",
                J::Obj(vec![
                    ("refused", J::Int(s.errors.refused)),
                    ("reset", J::Int(s.errors.reset)),
                    ("timeout", J::Int(s.errors.timeout)),
                    ("closed", J::Int(s.errors.closed)),
                    ("local", J::Int(s.errors.local)),
                    ("tls", J::Int(s.errors.tls)),
                    ("other", J::Int(s.errors.other)),
                ]),
            ),
        ];
        let mut out = String::with_capacity(1024);
        f.extend(self.extra.iter().cloned());
        J::Obj(f).write(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let mut st = Stats { ops: 4, bytes: 128, ..Default::default() };
        for v in [1000, 2000, 3000, 4000] {
            st.hist.record(v);
        }
        st.error("connect", libc::ECONNREFUSED);
        st.bad("x");
        let r = Report {
            mode: "oneshot",
            seconds: 2.0,
            stats: st,
            extra: vec![("src", J::Str("cycle \"x\"".into())), ("complete", J::Bool(true))],
            latency: Latency::Hist,
        };
        let j = r.to_json(0.25);
        assert!(j.starts_with("{\"mode\":\"oneshot\",\"ops\":4,\"seconds\":2,\"ops_per_s\":2,"), "{j}");
        // 2000 ns sits in bucket 1984..=2015: reported as its middle.
        assert!(j.contains("\"p50_us\":1.999,"), "{j}");
        assert!(j.contains("\"max_us\":4,"), "{j}");
        assert!(j.contains("\"errors\":1,\"bad_replies\":1,"), "{j}");
        assert!(j.contains("\"bytes_per_s\":64,"), "{j}");
        assert!(j.contains("\"loadgen_cpu_s\":0.25,"), "{j}");
        assert!(j.contains("\"refused\":1"), "{j}");
        assert!(j.ends_with("\"src\":\"cycle \\\"x\\\"\",\"complete\":true}"), "{j}");
    }

    #[test]
    fn exact_latency_and_none() {
        let mk = |latency| Report { mode: "hold", seconds: 1.0, stats: Stats::default(), extra: vec![], latency };
        let j = mk(Latency::Exact(vec![3000, 1000, 2000, 10_000])).to_json(0.0);
        assert!(
            j.contains("\"p50_us\":2,\"p90_us\":10,\"p99_us\":10,\"p999_us\":10,\"max_us\":10,\"mean_us\":4,"),
            "{j}"
        );
        let j = mk(Latency::None).to_json(0.0);
        assert!(j.contains("\"p50_us\":null,"), "{j}");
        assert!(j.contains("\"mean_us\":null,"), "{j}");
    }

    #[test]
    fn numbers() {
        let mut s = String::new();
        num(12.5, &mut s);
        s.push(' ');
        num(0.0004, &mut s);
        s.push(' ');
        num(f64::NAN, &mut s);
        s.push(' ');
        num(1234567.0, &mut s);
        assert_eq!(s, "12.5 0 null 1234567");
    }
}
