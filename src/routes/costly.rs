//! Answers whose cost grows with their size (agent pages, histories, events, output logs):
//! built off the HTTP threads, bounded in bytes, and limited together.
//!
//! Each costly answer reserves its bytes from one budget ([`BUDGET_BYTES`]) before it is built
//! and keeps them until the connection has taken its last byte (the reservation rides in the
//! body). With the budget spent (many clients reading large answers, or not reading them at
//! all until `send_timeout_s` drops them), a new costly read gets 429 with `Retry-After: 1`
//! at once, and costs nothing. So neither a page that loops on `GET /agents` nor 200 clients
//! that never read can grow heartbeatd's memory past the budget or take the HTTP threads from
//! the heartbeats. When the last costly answer of a burst is gone, the memory is given back
//! to the OS ([`TRIM_DELAY`] later, off the HTTP threads).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::{header, StatusCode};
use actix_web::web::Bytes;
use actix_web::{HttpResponse, ResponseError};

use super::ApiResponse;

/// Bytes of costly answers being built or sent, at most.
pub const BUDGET_BYTES: usize = 32 << 20;
/// A test hook: a smaller budget, so a test reaches it with a few clients.
pub const BUDGET_ENV: &str = "HEARTBEATD_TEST_COSTLY_BUDGET_BYTES";

/// [`BUDGET_BYTES`], or the test hook's value.
pub fn budget_bytes() -> usize {
    std::env::var(BUDGET_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BUDGET_BYTES)
}
/// After the last costly answer of a burst is gone, the allocator's free memory is given back
/// this much later (unless another burst began).
pub const TRIM_DELAY: Duration = Duration::from_millis(500);
/// The body is handed to the connection in pieces of this size, so the reservation ends when
/// the client has read (nearly) all of it, not when the whole answer was copied to a buffer.
const CHUNK: usize = 64 << 10;

/// The shared budget.
#[derive(Debug)]
pub struct CostlyReads {
    in_flight: AtomicUsize,
    budget: usize,
    /// Costly reads refused with 429 since start (`/metrics`).
    pub refused: AtomicU64,
    /// A trim of the allocator is scheduled.
    trim_scheduled: AtomicBool,
}

/// The budget is spent: 429.
#[derive(Debug, thiserror::Error)]
#[error("too many large answers are being sent at once; retry in a second")]
pub struct Busy;

impl ResponseError for Busy {
    fn status_code(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = ApiResponse::error(self.status_code(), self.to_string());
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        response
    }
}

impl CostlyReads {
    pub fn new(budget: usize) -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            budget,
            refused: AtomicU64::new(0),
            trim_scheduled: AtomicBool::new(false),
        })
    }

    /// The budget is all back: give the burst's memory back to the OS a little later, on the
    /// blocking pool (within a runtime only; tests without one skip it).
    fn schedule_trim(self: &Arc<Self>) {
        if self.trim_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.trim_scheduled.store(false, Ordering::Release);
            return;
        };
        let reads = Arc::clone(self);
        runtime.spawn(async move {
            actix_rt::time::sleep(TRIM_DELAY).await;
            reads.trim_scheduled.store(false, Ordering::Release);
            if reads.in_flight() == 0 {
                let _ = actix_rt::task::spawn_blocking(crate::memory::give_back_free_memory).await;
            }
        });
    }

    /// Reserves `bytes` (the most the answer can be), or `Busy`.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Result<Reservation, Busy> {
        let taken = self.in_flight.fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
            now.checked_add(bytes).filter(|total| *total <= self.budget)
        });
        match taken {
            Ok(_) => Ok(Reservation {
                reads: Arc::clone(self),
                bytes,
            }),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                Err(Busy)
            }
        }
    }

    /// Bytes reserved now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// Bytes of the budget held by one answer; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    reads: Arc<CostlyReads>,
    bytes: usize,
}

impl Reservation {
    /// Gives back what the built answer did not need.
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.reads.in_flight.fetch_sub(self.bytes - bytes, Ordering::AcqRel);
            self.bytes = bytes;
        }
    }

    /// Charges `bytes` in all from now on: gives back what is no longer held, or takes what is
    /// held beyond the reservation (`Busy` if the budget has no room for it; then the caller
    /// drops what it built and answers 429).
    pub fn resize_to(&mut self, bytes: usize) -> Result<(), Busy> {
        if bytes <= self.bytes {
            self.shrink_to(bytes);
            return Ok(());
        }
        let more = bytes - self.bytes;
        let taken = self
            .reads
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(more).filter(|total| *total <= self.reads.budget)
            });
        match taken {
            Ok(_) => {
                self.bytes = bytes;
                Ok(())
            }
            Err(_) => {
                self.reads.refused.fetch_add(1, Ordering::Relaxed);
                Err(Busy)
            }
        }
    }

    /// A 200 answer carrying `json`, holding this reservation until it is sent.
    pub fn json_answer(mut self, json: Bytes) -> HttpResponse {
        self.shrink_to(json.len());
        HttpResponse::Ok().content_type("application/json").body(ReservedBody {
            rest: json,
            _reservation: self,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let before = self.reads.in_flight.fetch_sub(self.bytes, Ordering::AcqRel);
        if before == self.bytes {
            self.reads.schedule_trim();
        }
    }
}

/// A body that holds its reservation until its last piece is taken.
struct ReservedBody {
    rest: Bytes,
    _reservation: Reservation,
}

impl MessageBody for ReservedBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized(self.rest.len() as u64)
    }

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        let piece = this.rest.split_to(this.rest.len().min(CHUNK));
        Poll::Ready(Some(Ok(piece)))
    }
}

/// One answer built once and sent to many (the `/metrics` body of the last scrape): its bytes
/// are charged to the budget once, and held until the last connection sending it has taken
/// its last piece. Each connection gets 64 KiB pieces of the same bytes, never a copy of the
/// whole.
#[derive(Debug, Clone)]
pub struct SharedAnswer(Arc<(Bytes, Reservation)>);

impl SharedAnswer {
    /// Shares `bytes`, charged to `reservation` (resized to their length; `Busy` if the
    /// budget has no room for them). Bytes larger than the whole budget (a `/metrics` body
    /// with `metrics_agent_limit` raised far) are charged the whole budget: such an answer is
    /// sent only while no other large answer is, rather than never.
    pub fn new(bytes: Bytes, mut reservation: Reservation) -> Result<Self, Busy> {
        let budget = reservation.reads.budget;
        reservation.resize_to(bytes.len().min(budget))?;
        Ok(Self(Arc::new((bytes, reservation))))
    }

    /// A body sending the shared bytes.
    pub fn body(&self) -> impl MessageBody<Error = std::convert::Infallible> + 'static {
        SharedBody {
            answer: Arc::clone(&self.0),
            at: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.0 .0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A connection's view of a [`SharedAnswer`]: where it is in the bytes.
struct SharedBody {
    answer: Arc<(Bytes, Reservation)>,
    at: usize,
}

impl MessageBody for SharedBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Sized((self.answer.0.len() - self.at) as u64)
    }

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        let bytes = &this.answer.0;
        if this.at >= bytes.len() {
            return Poll::Ready(None);
        }
        let end = bytes.len().min(this.at + CHUNK);
        let piece = bytes.slice(this.at..end);
        this.at = end;
        Poll::Ready(Some(Ok(piece)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_shared_and_given_back() {
        let reads = CostlyReads::new(100);
        let a = reads.reserve(60).unwrap();
        assert!(reads.reserve(50).is_err(), "over the budget");
        assert_eq!(reads.refused.load(Ordering::Relaxed), 1);
        let mut b = reads.reserve(40).unwrap();
        b.shrink_to(10);
        assert_eq!(reads.in_flight(), 70);
        drop(a);
        drop(b);
        assert_eq!(reads.in_flight(), 0);
    }

    #[actix_rt::test]
    async fn a_shared_answer_is_charged_once_and_held_until_its_last_reader_is_done() {
        let reads = CostlyReads::new(1 << 20);
        let bytes = Bytes::from(vec![b'm'; CHUNK * 3]);
        let shared = SharedAnswer::new(bytes.clone(), reads.reserve(0).unwrap()).unwrap();
        let bodies: Vec<_> = (0..100).map(|_| Box::pin(shared.body())).collect();
        assert_eq!(reads.in_flight(), bytes.len(), "charged once for 100 readers");
        drop(shared);
        for mut body in bodies {
            let mut got = Vec::new();
            while let Some(piece) =
                futures::StreamExt::next(&mut futures::stream::poll_fn(|cx| body.as_mut().poll_next(cx))).await
            {
                let piece = piece.unwrap();
                assert!(piece.len() <= CHUNK, "handed out in pieces");
                got.extend_from_slice(&piece);
            }
            assert_eq!(got, bytes);
            assert_eq!(reads.in_flight(), bytes.len(), "held while a reader remains");
        }
        assert_eq!(reads.in_flight(), 0);
        // Larger than the whole budget: charged the whole budget, so sent only alone.
        let huge = SharedAnswer::new(Bytes::from(vec![0; 2 << 20]), reads.reserve(0).unwrap()).unwrap();
        assert_eq!(reads.in_flight(), 1 << 20);
        let _other = reads.reserve(0).unwrap();
        assert!(SharedAnswer::new(Bytes::from(vec![0; 10]), reads.reserve(0).unwrap()).is_err());
        drop(huge);
        assert_eq!(reads.in_flight(), 0);
    }

    #[test]
    fn a_reservation_grows_to_what_was_really_built_or_is_refused() {
        let reads = CostlyReads::new(100);
        let mut a = reads.reserve(10).unwrap();
        a.resize_to(70).unwrap();
        assert_eq!(reads.in_flight(), 70);
        let mut b = reads.reserve(20).unwrap();
        assert!(b.resize_to(31).is_err(), "70 + 31 is over the budget");
        assert_eq!(reads.in_flight(), 90, "a refused growth takes nothing");
        b.resize_to(5).unwrap();
        assert_eq!(reads.in_flight(), 75);
        drop((a, b));
        assert_eq!(reads.in_flight(), 0);
    }

    #[actix_rt::test]
    async fn a_body_keeps_its_reservation_until_its_last_piece_is_taken() {
        let reads = CostlyReads::new(1 << 20);
        let json = Bytes::from(vec![b'x'; CHUNK * 2 + 5]);
        let response = reads.reserve(1 << 20).unwrap().json_answer(json.clone());
        assert_eq!(reads.in_flight(), json.len(), "shrunk to the answer");
        let mut body = Box::pin(response.into_body());
        let mut got = Vec::new();
        while let Some(piece) =
            futures::StreamExt::next(&mut futures::stream::poll_fn(|cx| body.as_mut().poll_next(cx))).await
        {
            assert!(reads.in_flight() > 0, "held while pieces remain");
            got.extend_from_slice(&piece.unwrap());
        }
        assert_eq!(got, json);
        drop(body);
        assert_eq!(reads.in_flight(), 0);
    }
}
