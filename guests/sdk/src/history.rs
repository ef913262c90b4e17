//! A bounded history of observations, as bytes for the `state` capability: what a policy
//! needs to remember between runs (a fresh instance each run keeps nothing else).

/// The last `capacity` observations `(ms since the epoch, value)`, oldest first.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    points: Vec<(i64, f64)>,
    capacity: usize,
}

impl History {
    /// An empty history keeping at most `capacity` points (at least 1).
    pub fn new(capacity: usize) -> Self {
        History {
            points: Vec::new(),
            capacity: capacity.max(1),
        }
    }

    /// Adds an observation, dropping the oldest beyond the capacity. An observation older
    /// than the newest (a clock that went back) starts the history over.
    pub fn push(&mut self, at_ms: i64, value: f64) {
        if self.points.last().is_some_and(|(t, _)| *t > at_ms) {
            self.points.clear();
        }
        self.points.push((at_ms, value));
        let excess = self.points.len().saturating_sub(self.capacity);
        self.points.drain(..excess);
    }

    /// The observations, oldest first.
    pub fn points(&self) -> &[(i64, f64)] {
        &self.points
    }

    /// The observations at or after `since_ms`.
    pub fn since(&self, since_ms: i64) -> impl Iterator<Item = f64> + '_ {
        self.points
            .iter()
            .filter(move |(t, _)| *t >= since_ms)
            .map(|(_, v)| *v)
    }

    /// Encodes as 16 bytes a point (little-endian ms, then value).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.points
            .iter()
            .flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
            .collect()
    }

    /// Decodes what [`History::to_bytes`] wrote, keeping the newest `capacity` points;
    /// anything else gives an empty history (a policy then starts over, as after a loss of
    /// its state).
    pub fn from_bytes(bytes: &[u8], capacity: usize) -> Self {
        let mut history = History::new(capacity);
        if !bytes.len().is_multiple_of(16) {
            return history;
        }
        for chunk in bytes.chunks_exact(16) {
            let (t, v) = chunk.split_at(8);
            let (Ok(t), Ok(v)) = (<[u8; 8]>::try_from(t), <[u8; 8]>::try_from(v)) else {
                return History::new(capacity);
            };
            history.push(i64::from_le_bytes(t), f64::from_le_bytes(v));
        }
        history
    }

    /// The history kept in the `state` capability under `key` (empty if none).
    #[cfg(feature = "bindings")]
    pub fn load(key: &str, capacity: usize) -> Self {
        crate::bindings::wasmscaler::policy::state::get(key)
            .map(|bytes| History::from_bytes(&bytes, capacity))
            .unwrap_or_else(|| History::new(capacity))
    }

    /// Saves the history in the `state` capability under `key`.
    #[cfg(feature = "bindings")]
    pub fn save(&self, key: &str) -> Result<(), crate::Error> {
        crate::bindings::wasmscaler::policy::state::set(key, &self.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_keeps_its_newest_points_and_round_trips() {
        let mut history = History::new(3);
        for i in 0..5 {
            history.push(i * 1000, i as f64);
        }
        assert_eq!(history.points(), &[(2000, 2.0), (3000, 3.0), (4000, 4.0)]);
        assert_eq!(History::from_bytes(&history.to_bytes(), 3), history);
        assert_eq!(history.since(3000).collect::<Vec<_>>(), [3.0, 4.0]);
        // A clock that went back starts over; garbage decodes to nothing.
        history.push(0, 9.0);
        assert_eq!(history.points(), &[(0, 9.0)]);
        assert_eq!(History::from_bytes(&[1, 2, 3], 3), History::new(3));
    }
}
