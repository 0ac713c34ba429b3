//! The body of a host's response: the guest's whole answer when it is small, or a stream of
//! chunks fed by the task still running the guest, so a large response (a big file of a static
//! site) never sits whole in the host's memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::error::Failure;

/// An app whose response limit is above the default (16 MiB; a static site's is the bundle
/// limit) streams responses larger than this; smaller ones are read whole before the head is
/// sent, so a failure can still replace them. Apps within the default limit are always read
/// whole (a body over the limit gets a clean 500).
pub const STREAM_ABOVE: usize = 1 << 20;

/// How much of a response is read before its head is sent, for an app with `limits`.
pub(crate) fn buffered_up_to(limits: &fog_proto::Limits) -> usize {
    if limits.max_response_body > fog_proto::Limits::default().max_response_body {
        STREAM_ABOVE
    } else {
        usize::MAX
    }
}

/// Chunks in flight between the guest's task and the connection: the back-pressure that keeps
/// a streaming response's memory bounded.
pub(crate) const STREAM_CHUNKS: usize = 8;

/// Why a streamed body stopped before its end (the head had been sent, so the connection is
/// cut instead of answering with an error).
#[derive(Debug, thiserror::Error)]
#[error("response cut: {0}")]
pub struct BodyCut(pub Failure);

/// A host response's body.
#[derive(Debug)]
pub struct HostBody(Inner);

#[derive(Debug)]
enum Inner {
    Whole(Option<Bytes>),
    Stream(tokio::sync::mpsc::Receiver<Result<Bytes, BodyCut>>),
}

impl HostBody {
    /// A body of `bytes`, sent at once.
    pub fn full(bytes: impl Into<Bytes>) -> HostBody {
        let bytes = bytes.into();
        HostBody(Inner::Whole((!bytes.is_empty()).then_some(bytes)))
    }

    /// This body with every byte's lowest bit flipped (same length), for `fog host
    /// --corrupt-responses` (test only: a device that changes what its apps answer). A streamed
    /// body is left as it is.
    pub(crate) fn corrupted(self) -> HostBody {
        match self.0 {
            Inner::Whole(Some(bytes)) => {
                HostBody::full(bytes.iter().map(|b| b ^ 1).collect::<Vec<u8>>())
            }
            other => HostBody(other),
        }
    }

    /// A body that yields what arrives on `chunks` until the sender is dropped.
    pub(crate) fn stream(chunks: tokio::sync::mpsc::Receiver<Result<Bytes, BodyCut>>) -> HostBody {
        HostBody(Inner::Stream(chunks))
    }
}

impl Body for HostBody {
    type Data = Bytes;
    type Error = BodyCut;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyCut>>> {
        match &mut self.get_mut().0 {
            Inner::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Inner::Stream(chunks) => chunks
                .poll_recv(cx)
                .map(|chunk| chunk.map(|c| c.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.0, Inner::Whole(None))
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Inner::Stream(_) => SizeHint::default(),
        }
    }
}
