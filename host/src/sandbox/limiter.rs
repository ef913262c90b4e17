//! The per-call resource limiter: [`StoreLimits`] plus a record of which limit was hit.
//!
//! A guest whose memory growth is refused usually traps with something unhelpful (an abort
//! in its allocator). Remembering the refusal lets the host report "memory limit" instead.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use super::Limits;

/// Which limit refused a request during the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LimitHit {
    Memory { requested: u64, limit: u64 },
    Table { requested: u64, limit: u64 },
}

pub(crate) struct CallLimiter {
    inner: StoreLimits,
    memory_limit: u64,
    table_limit: u64,
    pub(crate) hit: Option<LimitHit>,
}

impl CallLimiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        let memory = usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX);
        let table = usize::try_from(limits.max_table_elements).unwrap_or(usize::MAX);
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        CallLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory)
                .table_elements(table)
                .instances(count(limits.max_instances))
                .tables(count(limits.max_tables))
                .memories(count(limits.max_instances))
                .build(),
            memory_limit: limits.memory_bytes,
            table_limit: u64::from(limits.max_table_elements),
            hit: None,
        }
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if !allowed && self.hit.is_none() {
            self.hit = Some(LimitHit::Memory {
                requested: desired as u64,
                limit: self.memory_limit,
            });
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.table_growing(current, desired, maximum)?;
        if !allowed && self.hit.is_none() {
            self.hit = Some(LimitHit::Table {
                requested: desired as u64,
                limit: self.table_limit,
            });
        }
        Ok(allowed)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
