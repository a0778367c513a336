//! Long messages go out as several platform messages. When a send fails half way, the retry
//! must not post the parts that already went out again: [`PartialSends`] remembers, per
//! message, the platform ids of the parts delivered so far, until the message is fully sent.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// How many partly sent messages an instance remembers by default.
pub const REMEMBERED_PARTIAL_SENDS: usize = 1000;

/// The parts delivered of partly sent messages, by message id: bounded, the oldest message
/// forgotten first. `P` is the platform's id of a delivered part.
pub struct PartialSends<P> {
    capacity: usize,
    state: Mutex<State<P>>,
}

struct State<P> {
    sent: HashMap<String, Vec<P>>,
    order: VecDeque<String>,
}

impl<P: Clone> PartialSends<P> {
    /// Remembers up to `capacity` partly sent messages (at least one).
    pub fn new(capacity: usize) -> PartialSends<P> {
        PartialSends {
            capacity: capacity.max(1),
            state: Mutex::new(State {
                sent: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// The parts of `message_id` delivered so far, in the order they went out.
    pub fn delivered(&self, message_id: &str) -> Vec<P> {
        let state = self.state.lock().expect("partial sends lock");
        state.sent.get(message_id).cloned().unwrap_or_default()
    }

    /// One more part of `message_id` went out.
    pub fn record(&self, message_id: &str, part: P) {
        let mut state = self.state.lock().expect("partial sends lock");
        match state.sent.get_mut(message_id) {
            Some(parts) => parts.push(part),
            None => {
                state.sent.insert(message_id.to_string(), vec![part]);
                state.order.push_back(message_id.to_string());
            }
        }
        while state.order.len() > self.capacity {
            if let Some(oldest) = state.order.pop_front() {
                state.sent.remove(&oldest);
            }
        }
    }

    /// `message_id` is fully sent: nothing about it needs remembering.
    pub fn forget(&self, message_id: &str) {
        let mut state = self.state.lock().expect("partial sends lock");
        if state.sent.remove(message_id).is_some() {
            state.order.retain(|id| id != message_id);
        }
    }

    /// How many partly sent messages are remembered.
    pub fn len(&self) -> usize {
        self.state.lock().expect("partial sends lock").sent.len()
    }

    /// Whether no partly sent message is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<P: Clone> Default for PartialSends<P> {
    fn default() -> PartialSends<P> {
        PartialSends::new(REMEMBERED_PARTIAL_SENDS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_remembered_until_forgotten_and_the_oldest_go_first() {
        let partial = PartialSends::new(3);
        partial.record("m1", 10);
        partial.record("m1", 11);
        assert_eq!(partial.delivered("m1"), [10, 11]);
        partial.forget("m1");
        assert!(partial.delivered("m1").is_empty());
        assert!(partial.is_empty());
        for n in 0..5 {
            partial.record(&n.to_string(), n);
        }
        assert_eq!(partial.len(), 3);
        assert!(partial.delivered("0").is_empty());
        assert!(partial.delivered("1").is_empty());
        assert_eq!(partial.delivered("4"), [4]);
        // A further part of a remembered message does not make it newer or count twice.
        partial.record("2", 20);
        partial.record("5", 5);
        assert!(partial.delivered("2").is_empty());
        assert_eq!(partial.delivered("3"), [3]);
        assert_eq!(partial.len(), 3);
    }
}
