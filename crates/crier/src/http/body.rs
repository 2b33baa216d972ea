//! Reading a request body into memory under two bounds: the per-request limit, and a budget
//! shared by every request in flight, so that many slow or large bodies shed load with an
//! answer instead of growing the server. Bodies are read only after the call is authenticated.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than {limit} bytes: send at most {limit} bytes per call")]
    TooLarge { limit: usize },
    #[error("the server is receiving too many request bodies at once: retry in a moment")]
    Busy,
    #[error("the request body did not arrive within {} seconds: send it whole, without pauses", .0.as_secs())]
    TimedOut(Duration),
    #[error("the request body could not be read ({0}): send a body with a valid Content-Length or chunked encoding")]
    Unreadable(String),
}

/// Request body bytes held in memory, over all requests.
#[derive(Clone)]
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
    timeout: Duration,
}

/// A body in memory; its bytes count against the budget until this is dropped.
pub struct ReadBody {
    pub bytes: Vec<u8>,
    _reserved: Option<OwnedSemaphorePermit>,
}

impl BodyBudget {
    pub fn new(budget_bytes: usize, timeout: Duration) -> BodyBudget {
        BodyBudget {
            bytes: Arc::new(Semaphore::new(budget_bytes.min(Semaphore::MAX_PERMITS))),
            timeout,
        }
    }

    /// Bytes of the budget not taken now.
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Reads `body`, at most `limit` bytes, within the body timeout. A declared length past
    /// the limit is refused before any byte is read. The budget is taken chunk by chunk as
    /// bytes arrive, not for the declared length: a client that declares a megabyte, sends a
    /// little and stalls holds only what it sent, and cannot starve the callers behind it.
    pub async fn read(&self, body: Body, limit: usize) -> Result<ReadBody, BodyError> {
        match tokio::time::timeout(self.timeout, self.read_unbounded_in_time(body, limit)).await {
            Ok(read) => read,
            Err(_) => Err(BodyError::TimedOut(self.timeout)),
        }
    }

    async fn read_unbounded_in_time(
        &self,
        mut body: Body,
        limit: usize,
    ) -> Result<ReadBody, BodyError> {
        let declared = axum::body::HttpBody::size_hint(&body).exact();
        if declared.is_some_and(|declared| declared > limit as u64) {
            return Err(BodyError::TooLarge { limit });
        }
        let mut reserved: Option<OwnedSemaphorePermit> = None;
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Unreadable(body_error_text(&e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if bytes.len() + data.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            if data.is_empty() {
                continue;
            }
            let more = self.reserve(data.len())?;
            match &mut reserved {
                Some(held) => held.merge(more),
                None => reserved = Some(more),
            }
            bytes.extend_from_slice(&data);
        }
        Ok(ReadBody {
            bytes,
            _reserved: reserved,
        })
    }

    fn reserve(&self, n: usize) -> Result<OwnedSemaphorePermit, BodyError> {
        let n = u32::try_from(n).map_err(|_| BodyError::Busy)?;
        Arc::clone(&self.bytes)
            .try_acquire_many_owned(n)
            .map_err(|_| BodyError::Busy)
    }
}

/// hyper's own words for a broken body (a malformed chunk size, a connection closed early),
/// without the chain of wrappers axum adds.
fn body_error_text(error: &axum::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(inner) = source.source() {
        source = inner;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: usize) -> BodyBudget {
        BodyBudget::new(bytes, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn a_declared_length_past_the_limit_is_refused_unread() {
        let error = budget(1 << 20)
            .read(Body::from(vec![b'x'; 101]), 100)
            .await
            .err();
        assert_eq!(error, Some(BodyError::TooLarge { limit: 100 }));
    }

    #[tokio::test]
    async fn the_budget_is_held_while_a_body_is_in_memory_and_freed_after() {
        let budget = budget(1000);
        let first = budget
            .read(Body::from(vec![b'x'; 600]), 1000)
            .await
            .unwrap();
        assert_eq!(first.bytes.len(), 600);
        assert_eq!(budget.available(), 400);
        let second = budget.read(Body::from(vec![b'y'; 600]), 1000).await.err();
        assert_eq!(second, Some(BodyError::Busy));
        drop(first);
        assert_eq!(budget.available(), 1000);
        assert!(budget.read(Body::from(vec![b'y'; 600]), 1000).await.is_ok());
    }

    #[tokio::test]
    async fn an_undeclared_body_reserves_as_it_arrives() {
        let chunks: Vec<Result<bytes::Bytes, std::io::Error>> =
            vec![Ok(vec![b'a'; 300].into()), Ok(vec![b'b'; 300].into())];
        let stream = Body::from_stream(futures_util::stream::iter(chunks));
        let budget = budget(1000);
        let read = budget.read(stream, 1000).await.unwrap();
        assert_eq!(read.bytes.len(), 600);
        assert_eq!(budget.available(), 400);
        let too_big: Vec<Result<bytes::Bytes, std::io::Error>> =
            vec![Ok(vec![b'a'; 80].into()), Ok(vec![b'b'; 80].into())];
        let error = budget
            .read(Body::from_stream(futures_util::stream::iter(too_big)), 100)
            .await
            .err();
        assert_eq!(error, Some(BodyError::TooLarge { limit: 100 }));
    }

    #[tokio::test]
    async fn a_body_that_stalls_times_out() {
        let stalled = Body::from_stream(futures_util::stream::pending::<
            Result<bytes::Bytes, std::io::Error>,
        >());
        let budget = BodyBudget::new(1000, Duration::from_millis(50));
        let error = budget.read(stalled, 1000).await.err();
        assert_eq!(error, Some(BodyError::TimedOut(Duration::from_millis(50))));
    }
}
