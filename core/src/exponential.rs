//! Exponential growth of a duration, saturating and capped: the one formula behind readiness
//! polling, restart backoff and retry backoff.

use core::time::Duration;

/// `base * factor^steps`, never above `cap`, computed by repeated saturating multiplication so
/// that no input can overflow or loop for long (the loop stops as soon as the cap is reached, or
/// at once when `factor <= 1`).
pub(crate) fn grow(base: Duration, factor: u32, steps: u32, cap: Duration) -> Duration {
    let mut value = base.min(cap);
    if factor <= 1 || value.is_zero() {
        return if factor == 0 && steps > 0 {
            Duration::ZERO
        } else {
            value
        };
    }
    for _ in 0..steps {
        if value >= cap {
            break;
        }
        value = value.saturating_mul(factor).min(cap);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_until_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(grow(ms(10), 2, 0, ms(1000)), ms(10));
        assert_eq!(grow(ms(10), 2, 3, ms(1000)), ms(80));
        assert_eq!(grow(ms(10), 2, 10, ms(1000)), ms(1000));
        assert_eq!(grow(ms(10), 1, 10, ms(1000)), ms(10));
        assert_eq!(grow(ms(10), 0, 1, ms(1000)), Duration::ZERO);
        assert_eq!(
            grow(Duration::MAX, u32::MAX, u32::MAX, Duration::MAX),
            Duration::MAX
        );
        assert_eq!(grow(ms(5000), 2, 0, ms(1000)), ms(1000));
    }
}
