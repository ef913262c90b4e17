//! Load traces: a CSV file of time and load, read once and replayed in virtual time.
//!
//! The format: a header row naming the columns, then one row per point. The time column
//! (`time` unless told otherwise) holds seconds from the trace's start (`0`, `15`, `30.5`) or
//! RFC 3339 timestamps (`2026-11-22T04:00:00Z`); times must rise strictly. The load column
//! (`load` unless told otherwise) holds the offered load at that time, in work units per
//! second (requests/s, items/s): a finite number, never negative. A point's load holds until
//! the next point's time. Other columns are ignored; empty lines are skipped.

use std::path::Path;

/// A load trace: `(seconds from the start, load)` points, times rising.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    points: Vec<(f64, f64)>,
    /// The first point's wall-clock time in ms since the Unix epoch, when the trace gave
    /// timestamps.
    start_ms: Option<i64>,
}

/// Why a trace cannot be read; each names the file and, where there is one, the line.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Io {
        /// The trace file.
        path: String,
        /// The OS's reason.
        source: std::io::Error,
    },
    /// A row is not CSV.
    #[error("{path}:{line}: {message}")]
    Csv {
        /// The trace file.
        path: String,
        /// The 1-based line.
        line: u64,
        /// The parser's reason.
        message: String,
    },
    /// The header has no such column.
    #[error(
        "{path}:1: no column {column:?} (the header has {found:?}); choose one with --time-column / --column"
    )]
    MissingColumn {
        /// The trace file.
        path: String,
        /// The column asked for.
        column: String,
        /// The columns the header has.
        found: Vec<String>,
    },
    /// A cell is not a number (or, in the time column, a timestamp).
    #[error("{path}:{line}: {column} {text:?} is not {expected}")]
    BadValue {
        /// The trace file.
        path: String,
        /// The 1-based line.
        line: u64,
        /// The column.
        column: String,
        /// The cell.
        text: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A negative load.
    #[error("{path}:{line}: load {load} is negative")]
    NegativeLoad {
        /// The trace file.
        path: String,
        /// The 1-based line.
        line: u64,
        /// The load.
        load: f64,
    },
    /// A time not after the previous row's.
    #[error(
        "{path}:{line}: time {time} s is not after the previous row's {previous} s (the trace must be sorted by time)"
    )]
    Unsorted {
        /// The trace file.
        path: String,
        /// The 1-based line.
        line: u64,
        /// This row's time, in seconds from the start.
        time: f64,
        /// The previous row's.
        previous: f64,
    },
    /// The file is over the size cap.
    #[error("{path}: {bytes} bytes, over the cap of {max} bytes for a trace")]
    TooLarge {
        /// The trace file.
        path: String,
        /// Its size.
        bytes: u64,
        /// The cap.
        max: u64,
    },
    /// Fewer than two points: no duration to replay.
    #[error("{path}: a trace needs at least two points, found {found}")]
    TooShort {
        /// The trace file.
        path: String,
        /// How many there were.
        found: usize,
    },
}

/// The largest trace file read: 256 MiB, about 10 million rows, years at one row a second.
pub const MAX_TRACE_BYTES: u64 = 256 << 20;

/// Which columns hold time and load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    /// The time column's header.
    pub time: String,
    /// The load column's header.
    pub load: String,
}

impl Default for Columns {
    fn default() -> Self {
        Columns {
            time: "time".into(),
            load: "load".into(),
        }
    }
}

impl Trace {
    /// Reads the trace in `path`, refusing a file over [`MAX_TRACE_BYTES`].
    pub fn read(path: &Path, columns: &Columns) -> Result<Trace, TraceError> {
        Trace::read_capped(path, columns, MAX_TRACE_BYTES)
    }

    /// [`Trace::read`] with the size cap `max_bytes`. The cap is checked while reading, so a
    /// file that grows (or a pipe) cannot get past it.
    pub fn read_capped(
        path: &Path,
        columns: &Columns,
        max_bytes: u64,
    ) -> Result<Trace, TraceError> {
        use std::io::Read as _;
        let name = path.display().to_string();
        let io = |source| TraceError::Io {
            path: name.clone(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(max_bytes.saturating_add(1))
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > max_bytes {
            return Err(TraceError::TooLarge {
                path: name,
                bytes: std::fs::metadata(path).map_or(text.len() as u64, |m| m.len()),
                max: max_bytes,
            });
        }
        Trace::parse(&text, &name, columns)
    }

    /// Parses `text` as a trace read from `path` (named in errors).
    pub fn parse(text: &str, path: &str, columns: &Columns) -> Result<Trace, TraceError> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let csv_error = |e: csv::Error| TraceError::Csv {
            path: path.to_owned(),
            line: e.position().map_or(1, |p| p.line()),
            message: e.to_string(),
        };
        let headers = reader.headers().map_err(csv_error)?.clone();
        let find = |column: &str| {
            headers
                .iter()
                .position(|h| h == column)
                .ok_or_else(|| TraceError::MissingColumn {
                    path: path.to_owned(),
                    column: column.to_owned(),
                    found: headers.iter().map(str::to_owned).collect(),
                })
        };
        let (time_at, load_at) = (find(&columns.time)?, find(&columns.load)?);
        let mut points: Vec<(f64, f64)> = Vec::new();
        let mut start_ms = None;
        let mut first_stamp_ms: Option<i64> = None;
        for record in reader.records() {
            let record = record.map_err(csv_error)?;
            let line = record.position().map_or(0, |p| p.line());
            let bad = |column: &str, text: &str, expected| TraceError::BadValue {
                path: path.to_owned(),
                line,
                column: column.to_owned(),
                text: text.to_owned(),
                expected,
            };
            let time_text = record.get(time_at).unwrap_or("");
            let load_text = record.get(load_at).unwrap_or("");
            let time = match time_text.parse::<f64>() {
                Ok(seconds) if seconds.is_finite() && first_stamp_ms.is_none() => seconds,
                _ => {
                    let stamp = time_text
                        .parse::<jiff::Timestamp>()
                        .map_err(|_| bad(&columns.time, time_text, "seconds or an RFC 3339 time"))?
                        .as_millisecond();
                    if points.is_empty() {
                        first_stamp_ms = Some(stamp);
                        start_ms = Some(stamp);
                    }
                    match first_stamp_ms {
                        Some(first) => (stamp - first) as f64 / 1000.0,
                        None => {
                            return Err(bad(
                                &columns.time,
                                time_text,
                                "seconds, as the rows before",
                            ));
                        }
                    }
                }
            };
            let load = load_text
                .parse::<f64>()
                .ok()
                .filter(|l| l.is_finite())
                .ok_or_else(|| bad(&columns.load, load_text, "a number"))?;
            if load < 0.0 {
                return Err(TraceError::NegativeLoad {
                    path: path.to_owned(),
                    line,
                    load,
                });
            }
            if let Some(&(previous, _)) = points.last()
                && time <= previous
            {
                return Err(TraceError::Unsorted {
                    path: path.to_owned(),
                    line,
                    time,
                    previous,
                });
            }
            points.push((time, load));
        }
        if points.len() < 2 {
            return Err(TraceError::TooShort {
                path: path.to_owned(),
                found: points.len(),
            });
        }
        // Times count from the first row.
        let origin = points[0].0;
        for point in &mut points {
            point.0 -= origin;
        }
        Ok(Trace { points, start_ms })
    }

    /// From the first point to the last, in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.points.last().map_or(0.0, |p| p.0)
    }

    /// The first point's wall-clock time, when the trace gave timestamps.
    pub fn start_ms(&self) -> Option<i64> {
        self.start_ms
    }

    /// The points.
    pub fn points(&self) -> &[(f64, f64)] {
        &self.points
    }

    /// A cursor reading the load at rising times in O(1) each.
    pub(crate) fn cursor(&self) -> Cursor<'_> {
        Cursor {
            points: &self.points,
            at: 0,
        }
    }
}

/// Reads a trace's load at times that never go back.
pub(crate) struct Cursor<'a> {
    points: &'a [(f64, f64)],
    at: usize,
}

impl Cursor<'_> {
    /// The load at `time`: the last point at or before it.
    pub(crate) fn load(&mut self, time: f64) -> f64 {
        while self.at + 1 < self.points.len() && self.points[self.at + 1].0 <= time {
            self.at += 1;
        }
        self.points.get(self.at).map_or(0.0, |p| p.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Trace, TraceError> {
        Trace::parse(text, "t.csv", &Columns::default())
    }

    #[test]
    fn seconds_and_timestamps_count_from_the_first_row() {
        let trace = parse("time,load\n10,1\n20,2.5\n").expect("trace");
        assert_eq!(trace.points(), &[(0.0, 1.0), (10.0, 2.5)]);
        assert_eq!(trace.start_ms(), None);
        let trace = parse("time,load,other\n2026-01-01T00:00:00Z,3,x\n2026-01-01T00:01:00Z,4,y\n")
            .expect("trace");
        assert_eq!(trace.points(), &[(0.0, 3.0), (60.0, 4.0)]);
        assert_eq!(trace.start_ms(), Some(1_767_225_600_000));
    }

    #[test]
    fn the_load_holds_until_the_next_point() {
        let trace = parse("time,load\n0,1\n60,5\n120,0\n").expect("trace");
        let mut cursor = trace.cursor();
        assert_eq!(cursor.load(0.0), 1.0);
        assert_eq!(cursor.load(59.9), 1.0);
        assert_eq!(cursor.load(60.0), 5.0);
        assert_eq!(cursor.load(500.0), 0.0);
    }

    #[test]
    fn bad_rows_are_named_by_line() {
        let e = parse("time,load\n0,1\n10,-2\n").unwrap_err();
        assert!(matches!(e, TraceError::NegativeLoad { line: 3, .. }), "{e}");
        assert!(e.to_string().starts_with("t.csv:3:"), "{e}");
        let e = parse("time,load\n0,1\n20,1\n10,1\n").unwrap_err();
        assert!(matches!(e, TraceError::Unsorted { line: 4, .. }), "{e}");
        let e = parse("time,load\n0,1\n5,many\n").unwrap_err();
        assert!(matches!(e, TraceError::BadValue { line: 3, .. }), "{e}");
        let e = parse("t,rps\n0,1\n5,1\n").unwrap_err();
        assert!(matches!(e, TraceError::MissingColumn { .. }), "{e}");
        assert!(e.to_string().contains("\"rps\""), "{e}");
        let e = parse("time,load\n0,1\n").unwrap_err();
        assert!(matches!(e, TraceError::TooShort { found: 1, .. }), "{e}");
        let e = parse("time,load\n0,1\n1,2,3\n").unwrap_err();
        assert!(matches!(e, TraceError::Csv { line: 3, .. }), "{e}");
    }

    #[test]
    fn another_column_can_be_chosen() {
        let columns = Columns {
            time: "t".into(),
            load: "rps".into(),
        };
        let trace = Trace::parse("t,rps\n0,1\n5,2\n", "t.csv", &columns).expect("trace");
        assert_eq!(trace.duration_secs(), 5.0);
    }

    #[test]
    fn a_file_over_the_cap_is_refused_naming_the_cap() {
        let dir = std::env::temp_dir().join(format!("wasmscaler-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("big.csv");
        std::fs::write(&path, "time,load\n0,1\n60,2\n").unwrap();
        let capped = Trace::read_capped(&path, &Columns::default(), 10);
        assert!(
            matches!(
                capped,
                Err(TraceError::TooLarge {
                    bytes: 19,
                    max: 10,
                    ..
                })
            ),
            "{capped:?}"
        );
        assert_eq!(
            Trace::read_capped(&path, &Columns::default(), 19)
                .unwrap()
                .points()
                .len(),
            2
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
