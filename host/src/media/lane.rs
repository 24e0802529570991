//! A bounded, blocking, drop-oldest queue between host tasks and plugin
//! threads: the ring behind every audio stream and the data-packet inbox.
//!
//! Owns: [`Lane`] — pushes never block (a full lane drops its oldest item
//! and counts it, never silently), pops wait on a condvar up to a deadline,
//! and a lane can be *ended* (the producer is gone: pops drain what is
//! queued, then report the end) or *closed* (the consumer is gone: pops
//! fail at once and wake up).
//!
//! Must not touch: what the items are, or the job. Shutdown reaches a
//! waiting pop through the `stop` predicate it is given and the stop bell
//! ([`super::bell`]), which wakes every parked pop when shutdown begins, so
//! a waiting plugin thread returns at once without the job having to know
//! every lane (and without polling).

use super::bell::Waitable;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Why a pop returned without an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PopEnd {
    /// Nothing arrived before the deadline.
    Timeout,
    /// The producer ended and every item was taken.
    Ended,
    /// The lane was closed by its consumer.
    Closed,
    /// `stop()` said so.
    Stopped,
    /// The item at the front was refused by `accept` (it stays queued).
    Refused,
}

struct State<T> {
    items: VecDeque<T>,
    /// Items dropped since the last successful pop.
    dropped: u64,
    ended: bool,
    closed: bool,
}

/// See the module doc. `T` is moved in and out; nothing is cloned.
pub(crate) struct Lane<T> {
    /// The queue and the condvar pops wait on (shared with the stop bell).
    shared: Arc<Waitable<State<T>>>,
    capacity: usize,
    /// Also counts every drop here (a process-wide figure).
    drop_counter: Option<&'static std::sync::atomic::AtomicU64>,
}

impl<T: Send + 'static> Lane<T> {
    /// A lane holding at most `capacity` items (at least 1).
    pub(crate) fn new(capacity: usize) -> Lane<T> {
        Lane {
            shared: Waitable::new(State {
                items: VecDeque::new(),
                dropped: 0,
                ended: false,
                closed: false,
            }),
            capacity: capacity.max(1),
            drop_counter: None,
        }
    }

    /// A lane whose drops are also added to `counter`.
    pub(crate) fn counted(
        capacity: usize,
        counter: &'static std::sync::atomic::AtomicU64,
    ) -> Lane<T> {
        Lane {
            drop_counter: Some(counter),
            ..Lane::new(capacity)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.shared.lock()
    }

    /// Queues `item`; when full, drops the oldest first. Returns false (and
    /// drops `item`) once the lane is ended or closed.
    pub(crate) fn push(&self, item: T) -> bool {
        let mut st = self.lock();
        if st.ended || st.closed {
            return false;
        }
        if st.items.len() >= self.capacity {
            st.items.pop_front();
            st.dropped += 1;
            if let Some(c) = self.drop_counter {
                c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        st.items.push_back(item);
        drop(st);
        self.shared.notify_one();
        true
    }

    /// The producer is gone: pops drain what is queued, then return `Ended`.
    pub(crate) fn end(&self) {
        self.lock().ended = true;
        self.shared.notify_all();
    }

    /// The consumer is gone: queued items are dropped and every pop, waiting
    /// or future, returns `Closed`.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        // Give the memory back: the handle may live on (leaked) forever.
        st.items = VecDeque::new();
        drop(st);
        self.shared.notify_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Items queued now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Takes the oldest item, waiting until `deadline`. Returns it with the
    /// number of items dropped since the previous successful pop. `accept`
    /// may refuse the front item (e.g. the caller's buffer is too small): it
    /// then stays queued and the pop returns `Refused`. Queued items come
    /// first; then `stop` (checked before the end, before waiting and after
    /// every wake-up, the stop bell's included), then the end.
    pub(crate) fn pop(
        &self,
        deadline: Instant,
        stop: &dyn Fn() -> bool,
        accept: &dyn Fn(&T) -> bool,
    ) -> Result<(T, u64), PopEnd> {
        let mut st = self.lock();
        // Registered only once this pop is about to wait (most pops of a
        // flowing stream find an item at once).
        let mut parked = None;
        loop {
            if st.closed {
                return Err(PopEnd::Closed);
            }
            if let Some(front) = st.items.front() {
                if !accept(front) {
                    return Err(PopEnd::Refused);
                }
                let item = st.items.pop_front().expect("front exists");
                let dropped = std::mem::take(&mut st.dropped);
                return Ok((item, dropped));
            }
            // Shutdown wins over an end that came with it (the cascade
            // ends every track): the caller learns the job is ending.
            if stop() {
                return Err(PopEnd::Stopped);
            }
            if st.ended {
                return Err(PopEnd::Ended);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(PopEnd::Timeout);
            }
            st = self.shared.park_or_wait(st, deadline, &mut parked);
        }
    }

    /// Takes the dropped count without popping (for a consumer that stops
    /// reading and still wants to report).
    #[cfg(test)]
    pub(crate) fn take_dropped(&self) -> u64 {
        std::mem::take(&mut self.lock().dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn never() -> bool {
        false
    }

    fn any<T>(_: &T) -> bool {
        true
    }

    #[test]
    fn overflow_drops_the_oldest_and_counts_it() {
        let lane = Lane::new(3);
        for i in 0..10 {
            assert!(lane.push(i));
        }
        let far = Instant::now() + Duration::from_secs(1);
        assert_eq!(lane.pop(far, &never, &any), Ok((7, 7)));
        assert_eq!(lane.pop(far, &never, &any), Ok((8, 0)));
        assert_eq!(lane.pop(far, &never, &any), Ok((9, 0)));
        assert_eq!(lane.take_dropped(), 0);
    }

    #[test]
    fn ended_lane_drains_then_reports_the_end() {
        let lane = Lane::new(4);
        lane.push(1);
        lane.end();
        assert!(!lane.push(2), "no push after the end");
        let far = Instant::now() + Duration::from_secs(1);
        assert_eq!(lane.pop(far, &never, &any), Ok((1, 0)));
        assert_eq!(lane.pop(far, &never, &any), Err(PopEnd::Ended));
    }

    #[test]
    fn a_refused_front_stays_queued() {
        let lane = Lane::new(4);
        lane.push(vec![0i16; 960]);
        let far = Instant::now() + Duration::from_secs(1);
        let small = |v: &Vec<i16>| v.len() <= 480;
        assert_eq!(lane.pop(far, &never, &small), Err(PopEnd::Refused));
        assert_eq!(lane.len(), 1);
        assert!(lane.pop(far, &never, &any).is_ok());
    }

    #[test]
    fn timeout_is_honoured() {
        let lane: Lane<u8> = Lane::new(1);
        let started = Instant::now();
        let got = lane.pop(started + Duration::from_millis(60), &never, &any);
        assert_eq!(got, Err(PopEnd::Timeout));
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(60), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    /// Close and stop both wake a waiting pop on another thread promptly.
    #[test]
    fn close_and_stop_wake_a_waiting_pop() {
        let lane: Arc<Lane<u8>> = Arc::new(Lane::new(1));
        let l2 = lane.clone();
        let waiter = std::thread::spawn(move || {
            let started = Instant::now();
            let r = l2.pop(started + Duration::from_secs(30), &never, &any);
            (r, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        lane.close();
        let (r, took) = waiter.join().unwrap();
        assert_eq!(r, Err(PopEnd::Closed));
        assert!(took < Duration::from_secs(5));

        let lane: Arc<Lane<u8>> = Arc::new(Lane::new(1));
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f2 = flag.clone();
        let l2 = lane.clone();
        let waiter = std::thread::spawn(move || {
            let stop = || f2.load(std::sync::atomic::Ordering::Acquire);
            l2.pop(Instant::now() + Duration::from_secs(30), &stop, &any)
        });
        std::thread::sleep(Duration::from_millis(50));
        let flagged = Instant::now();
        flag.store(true, std::sync::atomic::Ordering::Release);
        super::super::bell::ring();
        assert_eq!(waiter.join().unwrap(), Err(PopEnd::Stopped));
        // Well under the bell's 1 s safety net: the ring woke it.
        assert!(flagged.elapsed() < Duration::from_millis(500));
    }
}
