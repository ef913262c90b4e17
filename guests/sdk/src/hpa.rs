//! The Horizontal Pod Autoscaler's formula: `desired = ceil(current × metric / target)`,
//! holding the current count while the ratio is within the tolerance.

/// The HPA's replica count for `current` replicas whose metric averages `average` against
/// `target` (same unit, e.g. percent of the CPU request), holding `current` while
/// `|average / target - 1| <= tolerance` (the HPA's default tolerance is 0.1). A `target` of 0
/// or less holds the count.
pub fn desired_replicas(current: u32, average: f64, target: f64, tolerance: f64) -> u32 {
    if target <= 0.0 || !average.is_finite() {
        return current;
    }
    let ratio = average / target;
    if (ratio - 1.0).abs() <= tolerance {
        return current;
    }
    (f64::from(current) * ratio)
        .ceil()
        .clamp(0.0, f64::from(u32::MAX)) as u32
}

/// The mean of `values`, `None` when there are none.
pub fn average(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(sum, n), v| (sum + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formula_rounds_up_and_holds_within_the_tolerance() {
        // Three pods at 90 % against 50 %: 3 × 1.8 = 5.4 -> 6.
        assert_eq!(desired_replicas(3, 90.0, 50.0, 0.1), 6);
        // 54 % against 50 %: within 10 %, hold.
        assert_eq!(desired_replicas(3, 54.0, 50.0, 0.1), 3);
        // Down: 3 × 0.2 = 0.6 -> 1.
        assert_eq!(desired_replicas(3, 10.0, 50.0, 0.1), 1);
        assert_eq!(desired_replicas(3, 90.0, 0.0, 0.1), 3);
        assert_eq!(average([90.0, 80.0, 100.0]), Some(90.0));
        assert_eq!(average([]), None);
    }
}
