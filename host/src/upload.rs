//! The body of a visitor's request as the guest reads it: streamed from the connection into the
//! guest's `incoming-body` (never held whole by the host), and cut at the app's request-body
//! limit, whether the visitor sent a Content-Length or not.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

/// A request body that ends with an error once more than `limit` bytes have come, and says so
/// through the flag [`LimitedUpload::new`] returns, so the host answers 413 whatever the guest
/// made of the broken body.
pub(crate) struct LimitedUpload<B> {
    inner: Pin<Box<B>>,
    limit: u64,
    seen: u64,
    cut: Arc<AtomicBool>,
}

impl<B> LimitedUpload<B> {
    /// Wrap `inner`; the flag turns true when the body is cut for passing `limit`.
    pub(crate) fn new(inner: B, limit: u64) -> (Self, Arc<AtomicBool>) {
        let cut = Arc::new(AtomicBool::new(false));
        let body = LimitedUpload {
            inner: Box::pin(inner),
            limit,
            seen: 0,
            cut: cut.clone(),
        };
        (body, cut)
    }
}

impl<B> Body for LimitedUpload<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.cut.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                Some(self.seen),
            ))));
        }
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.seen += data.len() as u64;
                    if self.seen > self.limit {
                        self.cut.store(true, Ordering::Relaxed);
                        tracing::debug!(limit = self.limit, "request body cut at the app's limit");
                        return Poll::Ready(Some(Err(
                            wasmtime_wasi_http::Error::HttpRequestBodySize(Some(self.seen)),
                        )));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                let err: Box<dyn std::error::Error + Send + Sync> = err.into();
                tracing::debug!("request body broke off: {err}");
                Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpProtocolError)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
