//! When a failed attempt is tried again: the task's delay, doubled per failure with backoff,
//! capped, with jitter so that many failing tasks do not retry in lockstep.

use std::time::Duration;

use ferry_dag::dag::RetryPolicy;

/// The wait before attempt `next_try` (2 for the first retry). `jitter` in `[0, 1)` spreads
/// backoff delays over their upper half.
pub fn delay_before(policy: &RetryPolicy, next_try: u32, jitter: f64) -> Duration {
    let base = policy.delay.0;
    if !policy.exponential_backoff {
        return base;
    }
    let doublings = next_try.saturating_sub(2).min(30);
    let full = base
        .saturating_mul(1u32 << doublings)
        .min(policy.max_delay.0);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_dag::duration::Duration as DagDuration;

    fn policy(backoff: bool) -> RetryPolicy {
        RetryPolicy {
            retries: 5,
            delay: DagDuration::from_secs(60),
            exponential_backoff: backoff,
            max_delay: DagDuration::from_secs(300),
        }
    }

    #[test]
    fn fixed_delay_without_backoff() {
        assert_eq!(
            delay_before(&policy(false), 2, 0.9),
            Duration::from_secs(60)
        );
        assert_eq!(
            delay_before(&policy(false), 5, 0.1),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = policy(true);
        assert_eq!(delay_before(&p, 2, 1.0), Duration::from_secs(60));
        assert_eq!(delay_before(&p, 3, 1.0), Duration::from_secs(120));
        assert_eq!(delay_before(&p, 4, 1.0), Duration::from_secs(240));
        assert_eq!(delay_before(&p, 5, 1.0), Duration::from_secs(300));
        assert_eq!(delay_before(&p, 30, 1.0), Duration::from_secs(300));
        assert_eq!(delay_before(&p, 3, 0.0), Duration::from_secs(60));
    }
}
