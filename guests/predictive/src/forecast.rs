//! The forecast, apart from the bindings: the load history kept in `state`, additive
//! Holt-Winters over a bucketed season, and linear regression over the last observations.
//!
//! The load is the ready replicas' total CPU in percent of one replica's request (three pods
//! at 60 % are 180): what `targetUtilization` divides to give replicas.

/// The forecast's parameters, from the autoscaler's config.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Length of the season, in ms.
    pub season_ms: i64,
    /// Buckets per season: Holt-Winters sees one observation per bucket (its mean).
    pub buckets: usize,
    /// Level smoothing, 0-1.
    pub alpha: f64,
    /// Trend smoothing, 0-1.
    pub beta: f64,
    /// Seasonal smoothing, 0-1.
    pub gamma: f64,
    /// Observations the linear regression fits.
    pub window: usize,
}

/// What is kept between runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    /// The bucket being filled: `now_ms / bucket_ms`.
    pub bucket: i64,
    /// Sum and count of the observations in that bucket.
    pub sum: f64,
    pub count: f64,
    /// Buckets completed since the history began.
    pub completed: u64,
    /// Holt-Winters level and trend (per bucket).
    pub level: f64,
    pub trend: f64,
    /// Per bucket of the season: during the first season the raw bucket means, then the
    /// seasonal components.
    pub seasonal: Vec<f64>,
    /// The last observations, oldest first: (seconds since the epoch, load).
    pub recent: Vec<(f64, f64)>,
}

const FORMAT: f64 = 1.0;

impl History {
    /// Encodes as little-endian f64s: format, bucket, sum, count, completed, level, trend,
    /// then the seasonal count and values, then the recent count and pairs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut values = vec![
            FORMAT,
            self.bucket as f64,
            self.sum,
            self.count,
            self.completed as f64,
            self.level,
            self.trend,
            self.seasonal.len() as f64,
        ];
        values.extend(&self.seasonal);
        values.push(self.recent.len() as f64);
        for (t, v) in &self.recent {
            values.extend([*t, *v]);
        }
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Decodes what [`History::to_bytes`] wrote; `None` for anything else (the history then
    /// starts over, which costs only a season of forecasts).
    pub fn from_bytes(bytes: &[u8]) -> Option<History> {
        if !bytes.len().is_multiple_of(8) {
            return None;
        }
        let values: Vec<f64> = bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let mut it = values.into_iter();
        let mut next = || it.next();
        if next()? != FORMAT {
            return None;
        }
        let bucket = next()? as i64;
        let (sum, count, completed, level, trend) =
            (next()?, next()?, next()? as u64, next()?, next()?);
        let seasonal_len = next()? as usize;
        let seasonal: Vec<f64> = (0..seasonal_len).map(|_| next()).collect::<Option<_>>()?;
        let recent_len = next()? as usize;
        let recent = (0..recent_len)
            .map(|_| Some((next()?, next()?)))
            .collect::<Option<_>>()?;
        Some(History {
            bucket,
            sum,
            count,
            completed,
            level,
            trend,
            seasonal,
            recent,
        })
    }

    /// Adds the load observed at `now_ms`.
    pub fn observe(&mut self, now_ms: i64, load: f64, params: &Params) {
        let bucket_ms = (params.season_ms / params.buckets as i64).max(1);
        let bucket = now_ms.div_euclid(bucket_ms);
        if self.seasonal.len() != params.buckets || bucket < self.bucket {
            // New parameters, or a clock that went back: start over.
            *self = History {
                bucket,
                seasonal: vec![0.0; params.buckets],
                ..History::default()
            };
        }
        if bucket > self.bucket && self.count > 0.0 {
            let mean = self.sum / self.count;
            // Runs stopped for a while: the skipped buckets hold the last mean, up to a
            // season; a longer gap starts over.
            let gap = bucket - self.bucket;
            if gap > params.buckets as i64 {
                *self = History {
                    bucket,
                    seasonal: vec![0.0; params.buckets],
                    ..History::default()
                };
            } else {
                for b in self.bucket..bucket {
                    self.complete(b, mean, params);
                }
            }
            self.sum = 0.0;
            self.count = 0.0;
        }
        self.bucket = bucket;
        self.sum += load;
        self.count += 1.0;
        self.recent.push((now_ms as f64 / 1000.0, load));
        let excess = self.recent.len().saturating_sub(params.window.max(2));
        self.recent.drain(..excess);
    }

    /// Folds the mean `y` of bucket `b` into Holt-Winters.
    fn complete(&mut self, b: i64, y: f64, params: &Params) {
        let n = params.buckets;
        let i = b.rem_euclid(n as i64) as usize;
        if self.completed < n as u64 {
            self.seasonal[i] = y;
            self.completed += 1;
            if self.completed == n as u64 {
                // One season seen: the level is its mean, the seasonal parts deviations.
                self.level = self.seasonal.iter().sum::<f64>() / n as f64;
                for s in &mut self.seasonal {
                    *s -= self.level;
                }
                self.trend = 0.0;
            }
            return;
        }
        let previous = self.level;
        self.level = params.alpha * (y - self.seasonal[i])
            + (1.0 - params.alpha) * (self.level + self.trend);
        self.trend = params.beta * (self.level - previous) + (1.0 - params.beta) * self.trend;
        self.seasonal[i] =
            params.gamma * (y - self.level) + (1.0 - params.gamma) * self.seasonal[i];
        self.completed += 1;
    }

    /// Whether a whole season has been seen, so Holt-Winters can forecast.
    pub fn seasonal_ready(&self, params: &Params) -> bool {
        self.completed > params.buckets as u64
    }

    /// The Holt-Winters forecast of the load at `at_ms`, or `None` before a whole season.
    pub fn holt_winters(&self, at_ms: i64, params: &Params) -> Option<f64> {
        if !self.seasonal_ready(params) {
            return None;
        }
        let n = params.buckets;
        let bucket_ms = (params.season_ms / n as i64).max(1) as f64;
        // Buckets ahead of the last completed one, fractional; each bucket's seasonal part
        // sits at its centre, so the season is interpolated between neighbours.
        let position = at_ms as f64 / bucket_ms - 0.5;
        let ahead = (position - (self.bucket - 1) as f64).max(0.0);
        let low = position.floor();
        let frac = position - low;
        let at = |b: f64| self.seasonal[(b as i64).rem_euclid(n as i64) as usize];
        let seasonal = at(low) * (1.0 - frac) + at(low + 1.0) * frac;
        Some((self.level + ahead * self.trend + seasonal).max(0.0))
    }

    /// The least-squares line through the recent observations, read at `at_ms`; `None`
    /// with fewer than two.
    pub fn linear(&self, at_ms: i64) -> Option<f64> {
        let n = self.recent.len() as f64;
        if self.recent.len() < 2 {
            return None;
        }
        let t0 = self.recent[0].0;
        let mean_t = self.recent.iter().map(|(t, _)| t - t0).sum::<f64>() / n;
        let mean_v = self.recent.iter().map(|(_, v)| v).sum::<f64>() / n;
        let (mut sxy, mut sxx) = (0.0, 0.0);
        for (t, v) in &self.recent {
            let dt = t - t0 - mean_t;
            sxy += dt * (v - mean_v);
            sxx += dt * dt;
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let x = at_ms as f64 / 1000.0 - t0 - mean_t;
        Some((mean_v + slope * x).max(0.0))
    }
}
