//! Scheduling facts the paced sender is judged by, read from `/proc` (no system calls of
//! its own: setting the policy is in [`crate::sys::thread`]).

/// The kernel's RT throttling as (runtime, period) in microseconds: SCHED_FIFO tasks of a CPU
/// may run `runtime` of every `period`, then stop until the period ends. None when it is off
/// (runtime -1) or cannot be read.
pub fn rt_throttling() -> Option<(u64, u64)> {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/sys/kernel/{name}")).ok();
    parse_rt_throttling(&read("sched_rt_runtime_us")?, &read("sched_rt_period_us")?)
}

/// [`rt_throttling`] from the two files' contents.
pub fn parse_rt_throttling(runtime: &str, period: &str) -> Option<(u64, u64)> {
    let runtime = u64::try_from(runtime.trim().parse::<i64>().ok()?).ok()?;
    let period = u64::try_from(period.trim().parse::<i64>().ok()?).ok()?;
    (runtime < period).then_some((runtime, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_off_at_minus_one_or_a_full_period() {
        assert_eq!(
            parse_rt_throttling("950000\n", "1000000\n"),
            Some((950_000, 1_000_000))
        );
        assert_eq!(parse_rt_throttling("-1\n", "1000000\n"), None);
        assert_eq!(parse_rt_throttling("1000000", "1000000"), None);
        assert_eq!(parse_rt_throttling("x", "1000000"), None);
    }
}
