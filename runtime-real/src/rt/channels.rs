//! openraft's mpsc, oneshot and mutex over `tokio::sync` (none of which draw randomness;
//! under madsim, `tokio::sync` is tokio's own).

use futures::TryFutureExt;
use openraft_rt::{
    Mpsc, MpscReceiver, MpscSender, MpscWeakSender, OneshotSender, OptionalSend, SendError, TryRecvError,
};
use std::future::Future;
use tokio::sync::{mpsc, oneshot};

pub struct RtMpsc;
pub struct RtSender<T>(mpsc::Sender<T>);
pub struct RtReceiver<T>(mpsc::Receiver<T>);
pub struct RtWeakSender<T>(mpsc::WeakSender<T>);

impl<T> Clone for RtSender<T> {
    fn clone(&self) -> Self {
        RtSender(self.0.clone())
    }
}

impl<T> Clone for RtWeakSender<T> {
    fn clone(&self) -> Self {
        RtWeakSender(self.0.clone())
    }
}

impl Mpsc for RtMpsc {
    type Sender<T: OptionalSend> = RtSender<T>;
    type Receiver<T: OptionalSend> = RtReceiver<T>;
    type WeakSender<T: OptionalSend> = RtWeakSender<T>;

    fn channel<T: OptionalSend>(buffer: usize) -> (RtSender<T>, RtReceiver<T>) {
        let (tx, rx) = mpsc::channel(buffer);
        (RtSender(tx), RtReceiver(rx))
    }
}

impl<T: OptionalSend> MpscSender<RtMpsc, T> for RtSender<T> {
    fn send(&self, msg: T) -> impl Future<Output = Result<(), SendError<T>>> + OptionalSend {
        self.0.send(msg).map_err(|e| SendError(e.0))
    }

    fn downgrade(&self) -> RtWeakSender<T> {
        RtWeakSender(self.0.downgrade())
    }
}

impl<T: OptionalSend> MpscReceiver<T> for RtReceiver<T> {
    fn recv(&mut self) -> impl Future<Output = Option<T>> + OptionalSend {
        self.0.recv()
    }

    fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.0.try_recv().map_err(|e| match e {
            mpsc::error::TryRecvError::Empty => TryRecvError::Empty,
            mpsc::error::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }
}

impl<T: OptionalSend> MpscWeakSender<RtMpsc, T> for RtWeakSender<T> {
    fn upgrade(&self) -> Option<RtSender<T>> {
        self.0.upgrade().map(RtSender)
    }
}

pub struct RtOneshot;
pub struct RtOneshotSender<T>(oneshot::Sender<T>);

impl openraft_rt::Oneshot for RtOneshot {
    type Sender<T: OptionalSend> = RtOneshotSender<T>;
    type Receiver<T: OptionalSend> = oneshot::Receiver<T>;
    type ReceiverError = oneshot::error::RecvError;

    fn channel<T: OptionalSend>() -> (RtOneshotSender<T>, oneshot::Receiver<T>) {
        let (tx, rx) = oneshot::channel();
        (RtOneshotSender(tx), rx)
    }
}

impl<T: OptionalSend> OneshotSender<T> for RtOneshotSender<T> {
    fn send(self, t: T) -> Result<(), T> {
        self.0.send(t)
    }
}

pub struct RtMutex<T>(tokio::sync::Mutex<T>);

impl<T: OptionalSend + 'static> openraft_rt::Mutex<T> for RtMutex<T> {
    type Guard<'a> = tokio::sync::MutexGuard<'a, T>;

    fn new(value: T) -> Self {
        RtMutex(tokio::sync::Mutex::new(value))
    }

    fn lock(&self) -> impl Future<Output = Self::Guard<'_>> + OptionalSend {
        self.0.lock()
    }
}
