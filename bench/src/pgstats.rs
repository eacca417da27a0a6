//! What the server did over a run, from its own counters.

/// Counters of the server's work since it started: their difference over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DbCounters {
    pub wal_bytes: f64,
    /// WAL records that carried a whole page (the first change of a page after a checkpoint).
    pub full_page_images: i64,
    pub checkpoints: i64,
    /// Pages a backend had to write itself for want of a clean buffer.
    pub backend_writes: i64,
    /// Autovacuum passes over the queue table.
    pub autovacuums: i64,
}

impl std::ops::Sub for DbCounters {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            wal_bytes: self.wal_bytes - earlier.wal_bytes,
            full_page_images: self.full_page_images - earlier.full_page_images,
            checkpoints: self.checkpoints - earlier.checkpoints,
            backend_writes: self.backend_writes - earlier.backend_writes,
            autovacuums: self.autovacuums - earlier.autovacuums,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_subtract_field_by_field() {
        let at = |n: i64| DbCounters {
            wal_bytes: n as f64 * 1000.0,
            full_page_images: n,
            checkpoints: n / 2,
            backend_writes: n * 3,
            autovacuums: n / 5,
        };
        let run = at(10) - at(4);
        assert_eq!(
            run,
            DbCounters { wal_bytes: 6000.0, full_page_images: 6, checkpoints: 3, backend_writes: 18, autovacuums: 2 }
        );
    }
}
