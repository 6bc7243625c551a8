//! Verdicts: `--fail-if` rules (a small expression grammar, parsed by hand here) evaluated
//! against a finished [`Report`], and the JUnit XML that CI systems read.
//!
//! Grammar (a rule fails the run when its comparison is TRUE):
//!
//! ```text
//! rule   := [ "endpoint=" GLOB ":" ] expr CMP expr
//! CMP    := ">" | ">=" | "<" | "<=" | "==" | "!="
//! expr   := term (("+" | "-") term)*
//! term   := factor (("*" | "/") factor)*
//! factor := NUMBER ["%" | "ms" | "s"] | ["test." | "production."] METRIC | "(" expr ")" | "-" factor
//! METRIC := requests | errors | error_rate | p50 | p90 | p99 | p999 | p99.9 | max | mean
//!         | rps | diff | diff_rate | opaque
//! ```
//!
//! Latencies are in ms. `errors` and `diff` are counts, but compared with a percentage
//! (`errors > 0.1%`) they are taken as rates of requests and of compared responses. A glob
//! (`*` matches anything) evaluates the rule once per matching endpoint. Pure: no I/O.

pub use super::junit::{failures_text, render_junit};
use super::Report;
use serde::{Deserialize, Serialize};

/// A `--fail-if` rule that does not parse: the rule and what is wrong where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--fail-if `{rule}`: {what} at character {at}")]
pub struct RuleError {
    /// The rule as given.
    pub rule: String,
    /// What is wrong.
    pub what: String,
    /// 1-based character position.
    pub at: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Test,
    Production,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Requests,
    Errors,
    ErrorRate,
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
    Rps,
    Diff,
    DiffRate,
    Opaque,
}

const METRICS: [(&str, Metric); 14] = [
    ("requests", Metric::Requests),
    ("errors", Metric::Errors),
    ("error_rate", Metric::ErrorRate),
    ("p50", Metric::P50),
    ("p90", Metric::P90),
    ("p99", Metric::P99),
    ("p999", Metric::P999),
    ("p99.9", Metric::P999),
    ("max", Metric::Max),
    ("mean", Metric::Mean),
    ("rps", Metric::Rps),
    ("diff", Metric::Diff),
    ("diff_rate", Metric::DiffRate),
    ("opaque", Metric::Opaque),
];

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Num(f64),
    Pct(f64),
    Metric(Side, Metric),
    Bin(Box<Expr>, char, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

/// A parsed `--fail-if` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    text: String,
    scope: Option<String>,
    lhs: Expr,
    cmp: Cmp,
    rhs: Expr,
}

/// One rule evaluated (per endpoint when scoped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The rule as given.
    pub rule: String,
    /// The endpoint it was evaluated on; `None` for the whole run.
    pub endpoint: Option<String>,
    /// True when the rule held, or could not be evaluated: the run fails.
    pub failed: bool,
    /// The values compared, or why it could not be evaluated.
    pub detail: String,
}

struct Parser<'a> {
    rule: &'a str,
    s: &'a [u8],
    pos: usize,
    base: usize,
}

impl Parser<'_> {
    fn err(&self, what: impl Into<String>) -> RuleError {
        RuleError {
            rule: self.rule.to_string(),
            what: what.into(),
            at: self.base + self.pos + 1,
        }
    }

    fn ws(&mut self) {
        while self.s.get(self.pos).is_some_and(u8::is_ascii_whitespace) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn expr(&mut self) -> Result<Expr, RuleError> {
        let mut e = self.term()?;
        while let Some(c @ (b'+' | b'-')) = self.peek() {
            self.pos += 1;
            e = Expr::Bin(Box::new(e), c as char, Box::new(self.term()?));
        }
        Ok(e)
    }

    fn term(&mut self) -> Result<Expr, RuleError> {
        let mut e = self.factor()?;
        while let Some(c @ (b'*' | b'/')) = self.peek() {
            self.pos += 1;
            e = Expr::Bin(Box::new(e), c as char, Box::new(self.factor()?));
        }
        Ok(e)
    }

    fn factor(&mut self) -> Result<Expr, RuleError> {
        match self.peek() {
            None => Err(self.err("expected a number or a metric, found the end")),
            Some(b'(') => {
                self.pos += 1;
                let e = self.expr()?;
                if self.peek() != Some(b')') {
                    return Err(self.err("expected `)`"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(b'-') => {
                self.pos += 1;
                let f = self.factor()?;
                Ok(Expr::Bin(Box::new(Expr::Num(0.0)), '-', Box::new(f)))
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.pos;
                while self
                    .s
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.' || *c == b'e')
                {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let v: f64 = text.parse().map_err(|_| {
                    self.pos = start;
                    self.err(format!("`{text}` is not a number"))
                })?;
                let rest = &self.s[self.pos..];
                if rest.starts_with(b"%") {
                    self.pos += 1;
                    Ok(Expr::Pct(v / 100.0))
                } else if rest.starts_with(b"ms") {
                    self.pos += 2;
                    Ok(Expr::Num(v))
                } else if rest.starts_with(b"s")
                    && !rest.get(1).is_some_and(u8::is_ascii_alphanumeric)
                {
                    self.pos += 1;
                    Ok(Expr::Num(v * 1000.0))
                } else {
                    Ok(Expr::Num(v))
                }
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .s
                    .get(self.pos)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.'))
                {
                    self.pos += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let (side, name) = match word.split_once('.') {
                    Some(("production", m)) => (Side::Production, m),
                    Some(("test", m)) => (Side::Test, m),
                    _ => (Side::Test, word),
                };
                match METRICS.iter().find(|(n, _)| *n == name) {
                    Some((_, m)) => Ok(Expr::Metric(side, *m)),
                    None => {
                        self.pos = start;
                        let names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
                        Err(self.err(format!(
                            "unknown metric `{word}` (known: {}, optionally after `production.`)",
                            names.join(", ")
                        )))
                    }
                }
            }
            Some(c) => Err(self.err(format!("unexpected `{}`", c as char))),
        }
    }

    fn cmp(&mut self) -> Result<Cmp, RuleError> {
        self.ws();
        let rest = &self.s[self.pos..];
        let (c, n) = if rest.starts_with(b">=") {
            (Cmp::Ge, 2)
        } else if rest.starts_with(b"<=") {
            (Cmp::Le, 2)
        } else if rest.starts_with(b"==") {
            (Cmp::Eq, 2)
        } else if rest.starts_with(b"!=") {
            (Cmp::Ne, 2)
        } else if rest.starts_with(b">") {
            (Cmp::Gt, 1)
        } else if rest.starts_with(b"<") {
            (Cmp::Lt, 1)
        } else {
            return Err(self.err("expected a comparison (>, >=, <, <=, ==, !=)"));
        };
        self.pos += n;
        Ok(c)
    }
}

impl Rule {
    /// Parses one `--fail-if` rule.
    pub fn parse(text: &str) -> Result<Rule, RuleError> {
        let mut body = text.trim_start();
        let mut base = text.len() - body.len();
        let mut scope = None;
        if let Some(rest) = body.strip_prefix("endpoint=") {
            let (glob, after) = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => match rest[1..].find(q) {
                    Some(end) => (&rest[1..end + 1], rest[end + 2..].trim_start()),
                    None => {
                        return Err(RuleError {
                            rule: text.into(),
                            what: format!("unclosed {q} after endpoint="),
                            at: base + 10,
                        })
                    }
                },
                _ => match rest.find(':') {
                    Some(end) => (rest[..end].trim(), &rest[end..]),
                    None => ("", ""),
                },
            };
            let Some(after) = after.strip_prefix(':') else {
                return Err(RuleError {
                    rule: text.into(),
                    what: "expected `endpoint=PATTERN: expression`".into(),
                    at: base + 1,
                });
            };
            if glob.is_empty() {
                return Err(RuleError {
                    rule: text.into(),
                    what: "empty endpoint pattern".into(),
                    at: base + 10,
                });
            }
            scope = Some(glob.to_string());
            base = text.len() - after.len();
            body = after;
        }
        let mut p = Parser {
            rule: text,
            s: body.as_bytes(),
            pos: 0,
            base,
        };
        let lhs = p.expr()?;
        let cmp = p.cmp()?;
        let rhs = p.expr()?;
        if p.peek().is_some() {
            return Err(p.err("unexpected text after the expression"));
        }
        Ok(Rule {
            text: text.to_string(),
            scope,
            lhs,
            cmp,
            rhs,
        })
    }
}

/// `*` matches any run of characters; the rest matches itself.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let mut rest = s;
    let last = parts.len() - 1;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == last {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The figures a rule reads, for the whole run or one endpoint.
#[derive(Debug, Clone, Default)]
struct Figures {
    requests: f64,
    errors: f64,
    latency: Option<super::Percentiles>,
    rps: Option<f64>,
    diff: Option<(f64, f64)>,
    opaque: f64,
}

const TRANSPORT: [&str; 4] = ["reset", "refused", "timed_out", "closed"];

fn run_figures(r: &Report) -> (Figures, Option<Figures>) {
    let protocol_errors = |prod: bool| -> f64 {
        r.endpoints
            .iter()
            .filter_map(|e| {
                if prod {
                    e.production.as_ref()
                } else {
                    Some(&e.test)
                }
            })
            .flat_map(|s| s.errors_by_class.iter())
            .filter(|(c, _)| !TRANSPORT.contains(&c.as_str()))
            .map(|(_, n)| *n as f64)
            .sum()
    };
    let t = &r.test;
    let test = Figures {
        requests: t.requests as f64,
        errors: t.errors as f64 + protocol_errors(false),
        latency: (t.latency_ms.count > 0).then_some(t.latency_ms),
        rps: Some(t.rps),
        diff: r
            .diff
            .as_ref()
            .map(|d| ((d.compared - d.matched) as f64, d.compared as f64)),
        opaque: r.decode.as_ref().map_or(0.0, |d| d.opaque_requests as f64),
    };
    let prod = r.production.as_ref().map(|p| Figures {
        requests: p.requests as f64,
        errors: p.errors as f64 + protocol_errors(true),
        latency: (p.latency_ms.count > 0).then_some(p.latency_ms),
        rps: Some(p.rps),
        diff: None,
        opaque: 0.0,
    });
    (test, prod)
}

fn endpoint_figures(e: &super::EndpointReport) -> (Figures, Option<Figures>) {
    let side = |s: &super::EndpointSide| Figures {
        requests: s.requests as f64,
        errors: s.errors as f64,
        latency: (s.latency_ms.count > 0).then_some(s.latency_ms),
        rps: None,
        diff: None,
        opaque: 0.0,
    };
    let mut test = side(&e.test);
    test.diff = e
        .diff
        .as_ref()
        .map(|d| (d.differing as f64, d.compared as f64));
    (test, e.production.as_ref().map(side))
}

fn metric(
    side: Side,
    m: Metric,
    f: &(Figures, Option<Figures>),
    rate: bool,
) -> Result<f64, String> {
    let fig = match side {
        Side::Test => &f.0,
        Side::Production => {
            f.1.as_ref()
                .ok_or("production unknown: its responses are not in the capture")?
        }
    };
    let who = if side == Side::Test {
        ""
    } else {
        "production."
    };
    let ratio = |n: f64, d: f64| if d > 0.0 { n / d } else { 0.0 };
    let lat = |pick: fn(&super::Percentiles) -> f64| {
        fig.latency
            .as_ref()
            .map(pick)
            .ok_or_else(|| format!("{who}latency unknown: no answered requests"))
    };
    let diff = || {
        fig.diff
            .ok_or_else(|| format!("{who}diff unknown: run with --diff"))
    };
    match m {
        Metric::Requests => Ok(fig.requests),
        Metric::Errors if rate => Ok(ratio(fig.errors, fig.requests)),
        Metric::Errors => Ok(fig.errors),
        Metric::ErrorRate => Ok(ratio(fig.errors, fig.requests)),
        Metric::P50 => lat(|p| p.p50),
        Metric::P90 => lat(|p| p.p90),
        Metric::P99 => lat(|p| p.p99),
        Metric::P999 => lat(|p| p.p999),
        Metric::Max => lat(|p| p.max),
        Metric::Mean => lat(|p| p.mean),
        Metric::Rps => fig
            .rps
            .ok_or_else(|| "rps is only known for the whole run".to_string()),
        Metric::Diff if rate => diff().map(|(n, d)| ratio(n, d)),
        Metric::Diff => diff().map(|(n, _)| n),
        Metric::DiffRate => diff().map(|(n, d)| ratio(n, d)),
        Metric::Opaque if rate => Ok(ratio(fig.opaque, fig.requests)),
        Metric::Opaque => Ok(fig.opaque),
    }
}

fn eval(e: &Expr, f: &(Figures, Option<Figures>), rate: bool) -> Result<f64, String> {
    Ok(match e {
        Expr::Num(v) | Expr::Pct(v) => *v,
        Expr::Metric(s, m) => metric(*s, *m, f, rate)?,
        Expr::Bin(a, op, b) => {
            let (a, b) = (eval(a, f, false)?, eval(b, f, false)?);
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ if b == 0.0 => return Err("division by zero".into()),
                _ => a / b,
            }
        }
    })
}

impl Rule {
    fn check(&self, f: &(Figures, Option<Figures>)) -> (bool, String) {
        // A count compared with a percentage is taken as a rate.
        let lrate = matches!(self.rhs, Expr::Pct(_));
        let rrate = matches!(self.lhs, Expr::Pct(_));
        let (a, b) = match (eval(&self.lhs, f, lrate), eval(&self.rhs, f, rrate)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return (true, format!("cannot be evaluated: {e}")),
        };
        let held = match self.cmp {
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Eq => a == b,
            Cmp::Ne => a != b,
        };
        let op = match self.cmp {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Eq => "==",
            Cmp::Ne => "!=",
        };
        let fmt = |v: f64, pct: bool| {
            if pct {
                format!("{:.4} %", v * 100.0)
            } else {
                format!("{v:.4}")
            }
        };
        let pct = lrate || rrate;
        let detail = format!(
            "{} {op} {}: {}",
            fmt(a, pct),
            fmt(b, pct),
            if held { "FAILED" } else { "passed" }
        );
        (held, detail)
    }
}

/// Evaluates every rule: once on the whole run, or once per endpoint its pattern matches (a
/// pattern that matches none is a failure: a typo must not pass a CI run).
pub fn evaluate(rules: &[Rule], r: &Report) -> Vec<Verdict> {
    let mut out = Vec::new();
    for rule in rules {
        match &rule.scope {
            None => {
                let (failed, detail) = rule.check(&run_figures(r));
                out.push(Verdict {
                    rule: rule.text.clone(),
                    endpoint: None,
                    failed,
                    detail,
                });
            }
            Some(glob) => {
                let mut any = false;
                // An endpoint only OLD has (`report compare`) is listed, not judged.
                for e in r
                    .endpoints
                    .iter()
                    .filter(|e| !e.gone && glob_match(glob, &e.endpoint))
                {
                    any = true;
                    let (failed, detail) = rule.check(&endpoint_figures(e));
                    out.push(Verdict {
                        rule: rule.text.clone(),
                        endpoint: Some(e.endpoint.clone()),
                        failed,
                        detail,
                    });
                }
                if !any {
                    out.push(Verdict {
                        rule: rule.text.clone(),
                        endpoint: None,
                        failed: true,
                        detail: format!("no endpoint matches `{glob}`"),
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{EndpointReport, EndpointSide, Percentiles, SideReport};
    use super::*;

    fn side(requests: u64, errors: u64, p99: f64) -> EndpointSide {
        EndpointSide {
            requests,
            errors,
            error_rate: errors as f64 / requests as f64,
            errors_by_class: if errors > 0 {
                [("500".to_string(), errors)].into()
            } else {
                Default::default()
            },
            latency_ms: Percentiles {
                count: requests,
                p50: p99 / 2.0,
                p99,
                ..Default::default()
            },
            latency_hist: None,
        }
    }

    fn report() -> Report {
        let ep = |name: &str, t: EndpointSide, p: EndpointSide| EndpointReport {
            protocol: "http".into(),
            endpoint: name.into(),
            p99_ratio: Some(t.latency_ms.p99 / p.latency_ms.p99),
            test: t,
            production: Some(p),
            diff: None,
            gone: false,
        };
        Report {
            test: SideReport {
                requests: 300,
                latency_ms: Percentiles {
                    count: 300,
                    p99: 30.0,
                    ..Default::default()
                },
                ..Default::default()
            },
            production: Some(SideReport {
                requests: 300,
                latency_ms: Percentiles {
                    count: 300,
                    p99: 2.0,
                    ..Default::default()
                },
                ..Default::default()
            }),
            endpoints: vec![
                ep("GET /slow", side(100, 0, 30.0), side(100, 0, 1.0)),
                ep("GET /boom", side(100, 100, 1.0), side(100, 0, 1.0)),
                ep("GET /fast", side(100, 0, 1.0), side(100, 0, 1.0)),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn rules_per_endpoint_name_exactly_the_broken_ones() {
        let rules: Vec<Rule> = [
            "endpoint=*: p99 > 1.5 * production.p99",
            "endpoint=GET *: errors > 0.1%",
            "errors > 1%",
            "p99 < 100ms",
        ]
        .iter()
        .map(|r| Rule::parse(r).unwrap())
        .collect();
        let v = evaluate(&rules, &report());
        let failed: Vec<(String, Option<&str>)> = v
            .iter()
            .filter(|x| x.failed)
            .map(|x| (x.rule.clone(), x.endpoint.as_deref()))
            .collect();
        assert_eq!(
            failed,
            [
                (rules[0].text.clone(), Some("GET /slow")),
                (rules[1].text.clone(), Some("GET /boom")),
                // 100 of 300 requests answered 500: 33 % > 1 %.
                (rules[2].text.clone(), None),
                (rules[3].text.clone(), None),
            ]
        );
        let slow = v
            .iter()
            .find(|x| x.endpoint.as_deref() == Some("GET /slow"))
            .unwrap();
        assert!(slow.detail.contains("30.0000 > 1.5000"), "{}", slow.detail);
        // An unchanged build passes the same rules.
        let mut same = report();
        for e in &mut same.endpoints {
            e.test = e.production.clone().unwrap();
        }
        same.test.latency_ms.p99 = 2.0;
        let v = evaluate(&rules[..3], &same);
        assert!(v.iter().all(|x| !x.failed), "{v:?}");
        let mut r = report();
        r.verdicts = evaluate(&rules, &r);
        let x = render_junit(&r);
        assert!(
            x.contains("<testsuite name=\"endpoints\" tests=\"3\" failures=\"2\">"),
            "{x}"
        );
        assert!(x.contains("name=\"endpoint=*: p99 &gt; 1.5 * production.p99 [GET /slow]\""));
    }

    #[test]
    fn unknown_values_and_typos_fail_loudly() {
        let mut r = report();
        r.production = None;
        let v = evaluate(&[Rule::parse("p99 > production.p99").unwrap()], &r);
        assert!(v[0].failed && v[0].detail.contains("production unknown"));
        let v = evaluate(&[Rule::parse("endpoint=GET /nope: p99 > 1").unwrap()], &r);
        assert!(v[0].failed && v[0].detail.contains("no endpoint matches"));
        let v = evaluate(&[Rule::parse("diff > 0").unwrap()], &r);
        assert!(v[0].failed && v[0].detail.contains("--diff"));
    }

    #[test]
    fn parse_errors_say_what_and_where() {
        let e = Rule::parse("p99 > 1.2 * prod.p99").unwrap_err();
        assert_eq!(e.at, 13);
        assert!(e.what.contains("unknown metric `prod.p99`"), "{e}");
        let e = Rule::parse("p99 1.2").unwrap_err();
        assert!(e.what.contains("expected a comparison"), "{e}");
        assert!(Rule::parse("p99 >").is_err());
        assert!(Rule::parse("(p99 > 2").is_err());
        assert!(Rule::parse("endpoint=GET /a p99 > 2").is_err());
        assert!(Rule::parse("endpoint=\"GET /a: p99 > 2").is_err());
        assert!(Rule::parse("p99 > 2 2").is_err());
        let r = Rule::parse("endpoint='GET /a:b': (p99 - production.p99) / 2 >= -1.5e1").unwrap();
        assert_eq!(r.scope.as_deref(), Some("GET /a:b"));
        assert!(Rule::parse("p99.9 > 1s").is_ok());
        assert!(glob_match("GET /u*/{id}", "GET /users/{id}"));
        assert!(!glob_match("GET /u*", "POST /u"));
        assert!(glob_match("*", ""));
    }
}
