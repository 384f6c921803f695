//! Noticing that nobody reads stdout any more, without writing to it: `roster watch |
//! head -3` must end once `head` has its three lines, not at the next event, which may
//! come much later or never.

/// Resolves once stdout is a pipe or socket whose reading end has closed (or a terminal
/// that hung up). Never resolves for a file, `/dev/null`, or an open pipe.
pub async fn wait() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A blocking poll on a thread of its own: stdout may be a file, which epoll (and so
    // tokio's AsyncFd) refuses. The thread ends with the process.
    let spawned = std::thread::Builder::new().name("stdout-closed".into()).spawn(move || {
        if poll_until_closed() {
            let _ = tx.send(());
        }
    });
    if spawned.is_ok() && rx.await.is_ok() {
        return;
    }
    std::future::pending::<()>().await
}

/// Blocks until stdout reports an error or a hang-up (true), or polling it fails (false).
fn poll_until_closed() -> bool {
    let mut fd = libc::pollfd { fd: libc::STDOUT_FILENO, events: 0, revents: 0 };
    loop {
        // SAFETY: poll reads and writes only the one pollfd given, which lives on this stack.
        let ready = unsafe { libc::poll(&mut fd, 1, -1) };
        if ready < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return false;
        }
        // With no events asked for, only POLLERR, POLLHUP and POLLNVAL can be reported.
        return ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0;
    }
}
