//! Lingering reads of request bodies left unread: a server that answers before the request body
//! ended (a body cut at a limit) and then drops it makes its HTTP/1.1 connection close with bytes
//! still coming, and the client often sees a broken pipe instead of the answer. Reading (and
//! discarding) the rest for a bounded while lets the answer reach it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Buf, Frame, SizeHint};

/// How long a dropped body is still read.
pub const DRAIN_FOR: Duration = Duration::from_secs(5);
/// How many bytes of a dropped body are still read.
pub const DRAIN_BYTES: u64 = 64 << 20;

/// A body that, dropped before its end, is read to its end (within [`DRAIN_FOR`] and
/// [`DRAIN_BYTES`]) by a task of its own.
pub struct DrainOnDrop<B: Body + Send + 'static> {
    inner: Option<Pin<Box<B>>>,
    ended: bool,
}

impl<B: Body + Send + 'static> std::fmt::Debug for DrainOnDrop<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainOnDrop")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<B: Body + Send + 'static> DrainOnDrop<B> {
    /// Wrap `inner`.
    pub fn new(inner: B) -> Self {
        DrainOnDrop {
            inner: Some(Box::pin(inner)),
            ended: false,
        }
    }
}

impl<B: Body + Send + 'static> Body for DrainOnDrop<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = inner.as_mut().poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|b| b.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl<B: Body + Send + 'static> Drop for DrainOnDrop<B> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.ended || inner.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(inner));
        }
    }
}

/// Read `body` and discard it, within [`DRAIN_FOR`] and [`DRAIN_BYTES`].
async fn drain<B: Body>(mut body: Pin<Box<B>>) {
    let mut left = DRAIN_BYTES;
    let read = async {
        while let Some(Ok(frame)) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
            let len = frame.data_ref().map_or(0, |d| d.remaining() as u64);
            if len >= left {
                break;
            }
            left -= len;
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, read).await;
}
