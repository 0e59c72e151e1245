//! One session's traffic once its room is complete: the opening exchange, the
//! steady `custom` signals, the drain; and the stamped payloads they carry.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use proto::Signal;
use tokio::time::Instant;

use crate::link::{Addr, Event, Link};
use crate::run::{ANSWER_BYTES, CANDIDATE_BYTES, CANDIDATES, OFFER_BYTES, OPENING_TIMEOUT, Plan, Sending, Shared};
use crate::secs;

/// One session's side of the traffic once its room is complete.
pub(crate) struct Traffic<'a> {
    pub(crate) plan: &'a Plan,
    pub(crate) shared: &'a Shared,
    pub(crate) latency_us: &'a mut Histogram<u64>,
    pub(crate) rng: u64,
    /// False once the steady phase ended: nothing more is sent, not even answers.
    pub(crate) sending: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Opening,
    Steady,
    Drain,
}

impl Traffic<'_> {
    pub(crate) async fn exchange(&mut self, link: &mut Link, peers: &[(usize, Addr)], sending: &mut Sending) {
        let interval = secs(1.0 / self.plan.rate);
        let interval_us = (interval.as_micros() as u64).max(1);
        let opening_expected = peers.len() * (1 + CANDIDATES);
        let mut opening_received = 0;
        let mut phase = Phase::Opening;
        let mut next_tick = Instant::now() + OPENING_TIMEOUT;
        if peers.is_empty() {
            phase = Phase::Steady;
            next_tick = Instant::now();
        }
        loop {
            tokio::select! {
                event = link.recv() => match event {
                    Event::Signal { from, signal } => {
                        let steady = matches!(signal, Signal::Custom { .. });
                        self.received(&signal, steady, interval_us);
                        if !steady {
                            opening_received += 1;
                            if self.sending && self.reply(link, &from, &signal).await.is_err() {
                                break;
                            }
                            if phase == Phase::Opening && opening_received >= opening_expected {
                                phase = Phase::Steady;
                                next_tick = Instant::now();
                            }
                        }
                        // The opening exchange is over: acknowledge it all, as a browser would.
                        let opened = phase == Phase::Steady && !steady;
                        if link.acknowledge(opened).await.is_err() {
                            break;
                        }
                    }
                    Event::Error(code) => self.shared.error(&code),
                    Event::Goodbye(code) => {
                        self.shared.error(&code);
                        break;
                    }
                    Event::Other => {}
                    Event::Closed => {
                        self.shared.error("closed");
                        break;
                    }
                },
                _ = tokio::time::sleep_until(next_tick) => {
                    let now = Instant::now();
                    if phase != Phase::Drain && now >= self.plan.steady_end {
                        phase = Phase::Drain;
                        self.sending = false;
                        sending.stop();
                    }
                    match phase {
                        Phase::Opening => {
                            phase = Phase::Steady;
                            next_tick = now;
                        }
                        Phase::Steady => {
                            if !peers.is_empty() {
                                let peer = &peers[(self.next_random() % peers.len() as u64) as usize].1;
                                if self.send(link, peer, self.custom()).await.is_err() {
                                    break;
                                }
                            }
                            next_tick += interval;
                            // Far behind (a stalled sender): skip ahead rather than burst;
                            // the latency histogram corrects for the missed sends.
                            if next_tick + interval < now {
                                next_tick = now + interval;
                            }
                            // A slow rate (an idle run) must not sleep past the end of the steady phase.
                            next_tick = next_tick.min(self.plan.steady_end.max(now));
                        }
                        Phase::Drain => {
                            if self.shared.all_delivered() || now >= self.plan.drain_deadline {
                                break;
                            }
                            next_tick = now + Duration::from_millis(20);
                        }
                    }
                }
            }
        }
    }

    /// The opening replies: an answer and candidates to an offer, candidates to an answer.
    async fn reply(&mut self, link: &Link, from: &Addr, signal: &Signal) -> Result<(), &'static str> {
        match signal {
            Signal::Offer { .. } => {
                self.send(link, from, answer(self.shared)).await?;
            }
            Signal::Answer { .. } => {}
            _ => return Ok(()),
        }
        for _ in 0..CANDIDATES {
            self.send(link, from, candidate(self.shared)).await?;
        }
        Ok(())
    }

    pub(crate) async fn send(&mut self, link: &Link, to: &Addr, signal: Signal) -> Result<(), &'static str> {
        let bytes = payload(&signal).len() as u64;
        let steady = matches!(signal, Signal::Custom { .. });
        if steady {
            let now = self.shared.now_ns();
            self.shared.first_steady_ns.fetch_min(now, Ordering::Relaxed);
            self.shared.last_steady_send_ns.fetch_max(now, Ordering::Relaxed);
            self.shared.steady_sent.fetch_add(1, Ordering::Relaxed);
        }
        match link.signal(to, signal).await {
            Ok(()) => {
                self.shared.sent.fetch_add(1, Ordering::AcqRel);
                self.shared.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
                Ok(())
            }
            Err(label) => {
                self.shared.error(label);
                Err(label)
            }
        }
    }

    fn received(&mut self, signal: &Signal, steady: bool, interval_us: u64) {
        let now = self.shared.now_ns();
        let text = payload(signal);
        let Some(sent) = text.split_once(':').and_then(|(t, _)| t.parse::<u64>().ok()) else {
            self.shared.error("unstamped_payload");
            return;
        };
        let latency_us = now.saturating_sub(sent) / 1000;
        let record = sent >= self.plan.record_from_ns;
        if steady {
            if record {
                let _ = self.latency_us.record_correct(latency_us, interval_us);
            }
            self.shared.steady_received.fetch_add(1, Ordering::Relaxed);
            self.shared.steady_bytes.fetch_add(text.len() as u64, Ordering::Relaxed);
            self.shared.last_steady_ns.fetch_max(now, Ordering::Relaxed);
        } else if record {
            let _ = self.latency_us.record(latency_us);
        }
        self.shared
            .bytes_received
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        self.shared.received.fetch_add(1, Ordering::AcqRel);
    }

    fn custom(&self) -> Signal {
        Signal::Custom {
            data: stamped(self.shared, "custom ", self.plan.message_bytes),
        }
    }

    /// xorshift64*: enough to pick peers, no dependency.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The part of a signal that carries the timestamp and counts as its size.
fn payload(signal: &Signal) -> &str {
    match signal {
        Signal::Offer { sdp } | Signal::Answer { sdp } => sdp,
        Signal::Candidate { candidate, .. } => candidate,
        Signal::Custom { data } => data,
    }
}

/// `<nanoseconds since the epoch>:<body>`, padded to `size` bytes.
fn stamped(shared: &Shared, body: &str, size: usize) -> String {
    let mut s = format!("{}:{body}", shared.now_ns());
    let pad = size.saturating_sub(s.len());
    s.extend(std::iter::repeat_n('x', pad));
    s
}

pub(crate) fn offer(shared: &Shared) -> Signal {
    Signal::Offer {
        sdp: stamped(
            shared,
            "v=0\r\no=- 0 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
            OFFER_BYTES,
        ),
    }
}

fn answer(shared: &Shared) -> Signal {
    Signal::Answer {
        sdp: stamped(
            shared,
            "v=0\r\no=- 0 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
            ANSWER_BYTES,
        ),
    }
}

fn candidate(shared: &Shared) -> Signal {
    Signal::Candidate {
        candidate: stamped(
            shared,
            "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host generation 0 ",
            CANDIDATE_BYTES,
        ),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("load".into()),
    }
}
