//! The epoch ticker: the thread that advances the engine's epoch every tick, which is what
//! interrupts a guest at its deadline and makes a long call yield.
//!
//! It ticks only while a call is in flight. An idle host (most of the time: a run takes tens
//! of microseconds every 15 s) then has no thread waking 100 times a second: measured at about
//! a tenth of the fleet benchmark's CPU at 10,000 autoscalers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use wasmtime::Engine;

/// What calls and the ticker thread share.
struct Gate {
    stop: AtomicBool,
    in_flight: AtomicUsize,
    thread: Thread,
}

/// Owns the ticker thread; stops and joins it on drop.
pub(crate) struct EpochTicker {
    gate: Arc<Gate>,
    handle: Option<JoinHandle<()>>,
}

/// Held by a call for as long as it may run guest code (instantiation included).
pub(crate) struct Ticking(Arc<Gate>);

/// Hands out [`Ticking`] guards; cheap to clone into every component.
#[derive(Clone)]
pub(crate) struct TickerHandle(Arc<Gate>);

impl EpochTicker {
    pub(crate) fn start(engine: Engine, tick: Duration) -> std::io::Result<Self> {
        let (gate_tx, gate_rx) = std::sync::mpsc::sync_channel::<Arc<Gate>>(1);
        let handle = std::thread::Builder::new()
            .name("wasmscaler-epoch".into())
            .spawn(move || {
                let Ok(gate) = gate_rx.recv() else { return };
                while !gate.stop.load(Ordering::Acquire) {
                    if gate.in_flight.load(Ordering::Acquire) == 0 {
                        // Woken by the next call's start (or by drop); an unpark that came
                        // first makes this return at once, so no start is missed.
                        std::thread::park();
                        continue;
                    }
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })?;
        let gate = Arc::new(Gate {
            stop: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            thread: handle.thread().clone(),
        });
        // The thread only waits for its gate, so this cannot block.
        let _ = gate_tx.send(gate.clone());
        Ok(EpochTicker {
            gate,
            handle: Some(handle),
        })
    }

    pub(crate) fn handle(&self) -> TickerHandle {
        TickerHandle(self.gate.clone())
    }
}

impl TickerHandle {
    /// Keeps the epoch advancing until the guard is dropped.
    pub(crate) fn ticking(&self) -> Ticking {
        if self.0.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.0.thread.unpark();
        }
        Ticking(self.0.clone())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.gate.stop.store(true, Ordering::Release);
        self.gate.thread.unpark();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine() -> Engine {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).expect("engine")
    }

    #[test]
    fn ticks_only_while_a_call_is_in_flight() {
        let engine = engine();
        let ticker = EpochTicker::start(engine.clone(), Duration::from_millis(2)).expect("start");
        // A guest spinning with its deadline one epoch away: interrupted only once the
        // epoch advances.
        // (module (func (export "spin") (loop (br 0)))), encoded by hand: the engine here
        // has no text parser.
        const SPIN: &[u8] = &[
            0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
            0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
            0x03, 0x02, 0x01, 0x00, // one function of that type
            0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
            0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop br 0
        ];
        let module = wasmtime::Module::new(&engine, SPIN).expect("module");
        let mut store = wasmtime::Store::new(&engine, ());
        store.set_epoch_deadline(1);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .expect("spin");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(spin.call(&mut store, ()).is_err());
        });
        // Idle: no tick, so it keeps spinning.
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
        // A call in flight: the ticker wakes and the guest is interrupted.
        let guard = ticker.handle().ticking();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        drop(guard);
    }
}
