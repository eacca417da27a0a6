//! One endpoint's in-flight cap in this worker: a semaphore of `cap` permits, one per request in
//! flight, and a short local queue of deliveries claimed ahead of a free slot.
//!
//! Why a queue: a slot freed by an answer would otherwise stay empty for a whole claim round trip
//! (claim, load endpoints, start the attempt), and a fast endpoint would run well below its cap. So
//! a fast endpoint may have up to `ahead` deliveries claimed beyond its cap, each waiting here for
//! the next slot; a slow one gets no queue (its deliveries would only hold worker slots while
//! they wait) and its backlog is spread instead. Requests in flight never exceed `cap`: only a
//! permit sends.
//!
//! The dispatcher, when a claim had to leave rows for want of room, waits on `freed` before it
//! claims again. It is woken when an endpoint with nothing queued frees a slot, or when a queue
//! drops to one cap's worth: so a claim refills a queue in one go, not one row per claim, while
//! the rest of the queue keeps the slots busy during the claim.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// One endpoint's slots.
#[derive(Debug)]
pub struct Slots {
    semaphore: Arc<Semaphore>,
    cap: usize,
    /// Deliveries claimed ahead, waiting for a slot.
    waiting: AtomicUsize,
    freed: Arc<Notify>,
}

impl Slots {
    pub fn new(cap: usize, freed: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self { semaphore: Arc::new(Semaphore::new(cap)), cap, waiting: AtomicUsize::new(0), freed })
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Requests in flight (or with a slot reserved) now.
    pub fn in_flight(&self) -> usize {
        self.cap.saturating_sub(self.semaphore.available_permits())
    }

    /// In flight plus queued: what the worker holds of this endpoint.
    pub fn held(&self) -> usize {
        self.in_flight() + self.waiting.load(Ordering::SeqCst)
    }

    /// A free slot now, else a place in the queue if fewer than `ahead` wait; `None`: neither.
    pub fn reserve(self: &Arc<Self>, ahead: usize) -> Option<Reservation> {
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            return Some(Reservation { slots: Arc::clone(self), permit: Some(permit), queued: false });
        }
        self.waiting
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < ahead).then_some(n + 1))
            .ok()
            .map(|_| Reservation { slots: Arc::clone(self), permit: None, queued: true })
    }

    fn left_queue(&self) {
        let waiting = self.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        if waiting <= self.cap {
            self.freed.notify_one();
        }
    }
}

/// A slot of an endpoint's cap, or a place in its queue for one. Dropping it frees what it holds
/// and may wake a dispatcher waiting for room.
#[derive(Debug)]
pub struct Reservation {
    slots: Arc<Slots>,
    permit: Option<OwnedSemaphorePermit>,
    queued: bool,
}

impl Reservation {
    /// Whether it holds a slot; a queued one waits for one first, at most `limit` (slots are
    /// handed out in queue order). `false`: the endpoint did not free a slot in time.
    pub async fn ready(&mut self, limit: Duration) -> bool {
        if self.queued {
            let semaphore = Arc::clone(&self.slots.semaphore);
            self.permit = tokio::time::timeout(limit, semaphore.acquire_owned()).await.ok().and_then(Result::ok);
            self.queued = false;
            self.slots.left_queue();
        }
        self.permit.is_some()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.queued {
            self.slots.left_queue();
        }
        if self.permit.take().is_some() && self.slots.waiting.load(Ordering::SeqCst) == 0 {
            // The slot is free and nobody here waits for it: a claim can use it.
            self.slots.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_never_exceed_the_cap_and_the_queue_is_served_in_order() {
        let slots = Slots::new(2, Arc::new(Notify::new()));
        let mut held: Vec<Reservation> = (0..4).map(|_| slots.reserve(2).expect("a slot or a place")).collect();
        assert!(slots.reserve(2).is_none(), "2 in flight and 2 queued is all");
        assert_eq!((slots.in_flight(), slots.held()), (2, 4));
        let mut queued = held.split_off(2);
        assert!(!queued[0].ready(Duration::from_millis(10)).await, "no slot freed in time");
        drop(held.remove(0));
        assert!(queued[1].ready(Duration::from_millis(10)).await, "the freed slot");
        assert_eq!(slots.in_flight(), 2);
        drop(queued);
        drop(held);
        assert_eq!((slots.in_flight(), slots.held()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dispatcher_is_woken_when_a_slot_nobody_waits_for_frees() {
        let freed = Arc::new(Notify::new());
        let slots = Slots::new(8, Arc::clone(&freed));
        let first = slots.reserve(0).expect("a slot");
        let woken = freed.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        drop(first);
        assert!(tokio::time::timeout(Duration::from_millis(1), woken).await.is_ok());
    }
}
