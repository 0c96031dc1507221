//! The output stream of `write-via-stream` and `append-via-stream`: like
//! wasmtime-wasi's file stream (one write in flight on a blocking thread,
//! `check-write` 0 until it is done), except that each write is charged to the
//! app's quota before it lands ([`super::descriptor::write_charged`]). A write
//! past the quota fails the stream with ENOSPC, which the guest reads back as
//! `insufficient-space` through `filesystem-error-code`.

use super::{FilesApp, descriptor::write_charged};
use bytes::Bytes;
use std::{io, mem, sync::Arc};
use wasmtime_wasi::{
    p2::{OutputStream, Pollable, StreamError, StreamResult},
    runtime::{AbortOnDropJoinHandle, spawn_blocking},
};

/// Most bytes accepted per `write` (wasmtime-wasi's file streams take as much).
const WRITE_CAPACITY: usize = 64 * 1024;

pub struct QuotaOutputStream {
    app: Arc<FilesApp>,
    file: Arc<std::fs::File>,
    /// The next write's offset; `None`: appending.
    position: Option<u64>,
    state: State,
}

enum State {
    Ready,
    Waiting(AbortOnDropJoinHandle<io::Result<usize>>),
    Failed(io::Error),
    Closed,
}

impl QuotaOutputStream {
    pub fn new(app: Arc<FilesApp>, file: Arc<std::fs::File>, position: Option<u64>) -> Self {
        Self {
            app,
            file,
            position,
            state: State::Ready,
        }
    }

    /// The pending error, once: the stream is closed after it.
    fn take_error(&mut self) -> StreamResult<()> {
        match mem::replace(&mut self.state, State::Closed) {
            State::Failed(err) => Err(StreamError::LastOperationFailed(err.into())),
            other => {
                self.state = other;
                Ok(())
            }
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaOutputStream {
    fn write(&mut self, buf: Bytes) -> StreamResult<()> {
        match self.state {
            State::Ready => {}
            State::Closed => return Err(StreamError::Closed),
            State::Waiting(_) | State::Failed(_) => {
                return Err(StreamError::trap(
                    "write not permitted: check_write not called first",
                ));
            }
        }
        let (app, file, at) = (self.app.clone(), self.file.clone(), self.position);
        self.state = State::Waiting(spawn_blocking(move || {
            write_charged(&app.usage, app.quota, &file, &buf, at, true)
        }));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        match self.state {
            State::Closed => Err(StreamError::Closed),
            _ => self.take_error(),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match self.state {
            State::Ready => Ok(WRITE_CAPACITY),
            State::Waiting(_) => Ok(0),
            State::Closed => Err(StreamError::Closed),
            State::Failed(_) => self.take_error().map(|()| 0),
        }
    }

    async fn cancel(&mut self) {
        if let State::Waiting(task) = mem::replace(&mut self.state, State::Closed) {
            // A write on a blocking thread cannot be stopped: wait for it, so
            // its charge is settled before the stream is gone.
            task.cancel().await;
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaOutputStream {
    async fn ready(&mut self) {
        if let State::Waiting(task) = &mut self.state {
            self.state = match task.await {
                Ok(written) => {
                    if let Some(position) = &mut self.position {
                        *position += written as u64;
                    }
                    State::Ready
                }
                Err(err) => State::Failed(err),
            };
        }
    }
}
