//! Injected faults for the fault harness (`tessera-tests`): a store whose commits fail or
//! stall, and a per-process clock offset.
//!
//! Why here and why so: a guarantee is proved under faults, and some faults cannot be made
//! from outside a process (a disk that stops accepting writes, a commit that takes seconds,
//! a clock that is off by minutes). Each is one switch the node reads where the real fault
//! would bite: [`StoreFaults::before_commit`] at the top of every store commit, and
//! [`clock_offset_ms`] in the node's clock ([`crate::control::now_ms`]).
//!
//! The switches exist only with the cargo feature `fault-injection`, which only
//! `tessera-tests` enables: without it [`StoreFaults`] is an empty type whose check is a
//! no-op, the clock offset is a constant 0, and the admin route that flips them
//! (`PUT /admin/v1/faults`, operator only) is not compiled. They are never public fields of
//! production types: the store holds its `StoreFaults` privately and the replica hands out
//! a shared handle through [`crate::control::ControlPlane::faults`].

use std::sync::Arc;

#[cfg(feature = "fault-injection")]
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};

/// What the store does with its next commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreMode {
    /// Commit as usual.
    Ok,
    /// Fail every commit, as a full disk would (the node then stops, fail-stop).
    Fail,
    /// Wait `stall_ms` before each commit, as a saturated or dying disk would.
    Stall,
}

/// The store's fault switch, shared between the store (which reads it) and the admin route
/// (which flips it). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct StoreFaults {
    #[cfg(feature = "fault-injection")]
    inner: Arc<StoreSwitch>,
    #[cfg(not(feature = "fault-injection"))]
    _none: Arc<()>,
}

#[cfg(feature = "fault-injection")]
#[derive(Debug, Default)]
struct StoreSwitch {
    mode: AtomicU8,
    stall_ms: AtomicU64,
}

/// Why [`StoreFaults::before_commit`] refused a commit.
#[derive(Debug, thiserror::Error)]
#[error("injected failure: no space left on device")]
pub struct InjectedFailure;

impl StoreFaults {
    /// Called by the store at the top of every commit (on its blocking thread): fails or
    /// sleeps as switched; without the feature, returns `Ok` at once.
    pub fn before_commit(&self) -> Result<(), InjectedFailure> {
        #[cfg(feature = "fault-injection")]
        match self.mode() {
            StoreMode::Ok => {}
            StoreMode::Fail => return Err(InjectedFailure),
            StoreMode::Stall => {
                let stall_ms = self.inner.stall_ms.load(Ordering::Acquire);
                std::thread::sleep(std::time::Duration::from_millis(stall_ms));
            }
        }
        Ok(())
    }

    /// Switches what the following commits do (a commit in progress is not affected).
    #[cfg(feature = "fault-injection")]
    pub fn set(&self, mode: StoreMode, stall_ms: u64) {
        self.inner.stall_ms.store(stall_ms, Ordering::Release);
        let mode = match mode {
            StoreMode::Ok => 0,
            StoreMode::Fail => 1,
            StoreMode::Stall => 2,
        };
        self.inner.mode.store(mode, Ordering::Release);
    }

    #[cfg(feature = "fault-injection")]
    pub fn mode(&self) -> StoreMode {
        match self.inner.mode.load(Ordering::Acquire) {
            1 => StoreMode::Fail,
            2 => StoreMode::Stall,
            _ => StoreMode::Ok,
        }
    }
}

#[cfg(feature = "fault-injection")]
static CLOCK_OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Milliseconds added to this process's wall clock (see [`crate::control::now_ms`]): 0
/// unless set by `set_clock_offset_ms` (feature `fault-injection`).
pub fn clock_offset_ms() -> i64 {
    #[cfg(feature = "fault-injection")]
    {
        CLOCK_OFFSET_MS.load(Ordering::Relaxed)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        0
    }
}

/// Shifts this process's clock by `offset_ms` (a node running ahead or behind its peers).
/// Process-wide: one node per process, as the fault harness runs them. Set it before the
/// node starts ([`crate::cli`] reads `TESSERA_FAULT_CLOCK_OFFSET_MS`), since the protocol
/// core assumes its clock does not jump.
#[cfg(feature = "fault-injection")]
pub fn set_clock_offset_ms(offset_ms: i64) {
    CLOCK_OFFSET_MS.store(offset_ms, Ordering::Relaxed);
}

/// `now` shifted by the clock offset, floored at 0.
pub fn shift_ms(now_ms: u64) -> u64 {
    let offset_ms = clock_offset_ms();
    if offset_ms >= 0 {
        now_ms.saturating_add(offset_ms as u64)
    } else {
        now_ms.saturating_sub(offset_ms.unsigned_abs())
    }
}
