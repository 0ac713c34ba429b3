//! A stream as an ordinary byte pipe (`AsyncRead + AsyncWrite`), so HTTP/1.1 (hyper) can run
//! over it: a task pumps bytes between the HTX stream and one end of an in-memory duplex pipe.

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::conn::HtxStream;

/// Bytes buffered in each direction of the pipe.
const PIPE: usize = 64 << 10;

/// Turn `stream` into a byte pipe; closing the pipe's write side finishes the stream.
pub fn into_io(mut stream: HtxStream) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    tokio::spawn(async move {
        let (mut from_app, mut to_app) = tokio::io::split(ours);
        let mut buf = vec![0u8; 16 << 10];
        let mut app_done = false;
        let mut peer_done = false;
        while !(app_done && peer_done) {
            tokio::select! {
                read = from_app.read(&mut buf), if !app_done => match read {
                    Ok(0) | Err(_) => {
                        app_done = true;
                        if stream.finish().await.is_err() {
                            return;
                        }
                    }
                    Ok(n) => {
                        if stream.write(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                },
                chunk = stream.read(), if !peer_done => match chunk {
                    Ok(Some(data)) => {
                        if to_app.write_all(&data).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        peer_done = true;
                        let _ = to_app.shutdown().await;
                    }
                },
            }
        }
    });
    theirs
}
