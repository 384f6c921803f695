package dev.roster.client;

import com.fasterxml.jackson.databind.JsonNode;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.locks.Condition;
import java.util.concurrent.locks.ReentrantLock;

/**
 * The client's retry queue: writes wait here, in the order they were submitted, and one
 * thread of their own sends them, one at a time, as commands of one session (the HTTP
 * headers {@code Roster-Session} and {@code Roster-Seq}). A write that gets no answer,
 * or "no leader", "busy", "no answer in time" or a failed forward, is sent again with the
 * same session and sequence number after a capped, jittered backoff, to the next node
 * when one did not answer: the cluster answers a repeat with the reply it stored, so
 * nothing is applied twice, and nothing behind it goes first. The queue is bounded: at
 * the bound {@link #submit} throws {@link QueueFullException} naming why nothing drains.
 */
final class WriteQueue {
    /** First pause after a failed attempt; it doubles up to {@link #BACKOFF_MAX_MS}. */
    static final long BACKOFF_MIN_MS = 50;
    static final long BACKOFF_MAX_MS = 2_000;

    private final Transport transport;
    private final int capacity;
    private final ReentrantLock lock = new ReentrantLock();
    private final Condition changed = lock.newCondition();
    private final ArrayDeque<Pending> queue = new ArrayDeque<>();
    private final Thread drainer;
    /** Set by close: take no more, drain until this instant (System.nanoTime), then fail the rest. */
    private boolean closing;
    private long closeDeadlineNanos;
    /** Why the head has not gone yet; null after a success. */
    private volatile String lastError;
    private volatile long headSinceMillis;

    // Touched by the drainer thread only.
    private long session;
    private long lastSeq;

    /** One queued write. */
    static final class Pending {
        final String method;
        final String path;
        final String body;
        final String contentType;
        final CompletableFuture<JsonNode> done = new CompletableFuture<>();
        long session;
        long seq;
        /** It was sent and no definite answer came: it may have applied under (session, seq). */
        boolean maybeApplied;

        Pending(String method, String path, String body, String contentType) {
            this.method = method;
            this.path = path;
            this.body = body;
            this.contentType = contentType;
        }

        String what() {
            return method + " " + path;
        }
    }

    WriteQueue(Transport transport, int capacity) {
        if (capacity < 1) {
            throw new IllegalArgumentException("queue capacity " + capacity + ": it must hold at least one write");
        }
        this.transport = transport;
        this.capacity = capacity;
        this.drainer = new Thread(this::drain, "roster-write-queue");
        this.drainer.setDaemon(true);
        this.drainer.start();
    }

    /** Queues one write; its future completes with the answer's JSON or the typed error. */
    CompletableFuture<JsonNode> submit(String method, String path, String body, String contentType) {
        Pending p = new Pending(method, path, body, contentType);
        lock.lock();
        try {
            if (closing) {
                throw new RosterException(0, "closed", p.what() + ": the client is closed; the write was not queued");
            }
            if (queue.size() >= capacity) {
                long waited = System.currentTimeMillis() - headSinceMillis;
                throw new QueueFullException(capacity, p.what() + ": the retry queue is full (" + queue.size() + " of "
                        + capacity + " writes waiting; the oldest for " + waited + " ms); last error: "
                        + (lastError == null ? "none yet, the writes are being sent" : lastError)
                        + ". The write was not queued: retry later or give the client a larger queue");
            }
            if (queue.isEmpty()) {
                headSinceMillis = System.currentTimeMillis();
            }
            queue.addLast(p);
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        return p.done;
    }

    int pending() {
        lock.lock();
        try {
            return queue.size();
        } finally {
            lock.unlock();
        }
    }

    String lastError() {
        return lastError;
    }

    /**
     * Takes no more writes, lets the drainer deliver what is queued for up to {@code
     * drainMillis}, then fails what is left. Returns how many writes were left undelivered.
     */
    int close(long drainMillis) {
        lock.lock();
        try {
            if (!closing) {
                closing = true;
                closeDeadlineNanos = System.nanoTime() + drainMillis * 1_000_000;
            }
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        try {
            drainer.join(drainMillis + 5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        return failRest();
    }

    private int failRest() {
        List<Pending> rest;
        lock.lock();
        try {
            rest = new ArrayList<>(queue);
            queue.clear();
            changed.signalAll();
        } finally {
            lock.unlock();
        }
        for (Pending p : rest) {
            p.done.completeExceptionally(new RosterException(0, "closed", p.what()
                    + ": the client closed before the cluster answered" + (lastError == null ? "" : " (last error: " + lastError + ")")
                    + (p.maybeApplied ? "; it was sent and may have applied" : "; it was never applied")));
        }
        return rest.size();
    }

    /** The head of the queue, waiting for one; null when closing is done (empty or past its deadline). */
    private Pending head() throws InterruptedException {
        lock.lock();
        try {
            while (true) {
                if (closing && System.nanoTime() - closeDeadlineNanos >= 0) {
                    return null;
                }
                if (!queue.isEmpty()) {
                    return queue.peekFirst();
                }
                if (closing) {
                    return null;
                }
                changed.await();
            }
        } finally {
            lock.unlock();
        }
    }

    private void finish(Pending p) {
        lock.lock();
        try {
            Pending first = queue.pollFirst();
            assert first == p : "only the drainer removes, and only the head";
            headSinceMillis = System.currentTimeMillis();
            changed.signalAll();
        } finally {
            lock.unlock();
        }
    }

    /** Sleeps for the backoff, waking early when closing. */
    private void pause(long millis) throws InterruptedException {
        lock.lock();
        try {
            long nanos = millis * 1_000_000;
            while (nanos > 0 && !(closing && System.nanoTime() - closeDeadlineNanos >= 0)) {
                nanos = changed.awaitNanos(nanos);
            }
        } finally {
            lock.unlock();
        }
    }

    private void drain() {
        long backoff = BACKOFF_MIN_MS;
        try {
            while (true) {
                Pending p = head();
                if (p == null) {
                    return;
                }
                Outcome o = attempt(p);
                if (o == Outcome.RETRY) {
                    pause(ThreadLocalRandom.current().nextLong(backoff / 2, backoff + 1));
                    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
                    continue;
                }
                backoff = BACKOFF_MIN_MS;
                if (o == Outcome.DONE) {
                    lastError = null;
                    finish(p);
                }
                // Outcome.AGAIN: the same write at once, under a new session.
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (RuntimeException e) {
            // A bug here must not leave callers waiting forever: fail every queued write, naming it.
            lastError = "the write queue's thread failed: " + Transport.describe(e);
            lock.lock();
            try {
                closing = true;
                closeDeadlineNanos = System.nanoTime();
            } finally {
                lock.unlock();
            }
            failRest();
            throw e;
        }
    }

    private enum Outcome { DONE, RETRY, AGAIN }

    private Outcome attempt(Pending p) {
        if (session == 0) {
            try {
                Transport.Answer a = transport.send("POST", "/v1/sessions", null, null, Map.of());
                if (a.status() / 100 != 2) {
                    RosterException e = Transport.error("POST /v1/sessions", a);
                    if (!e.retryable()) {
                        // Cannot open a session (a refused token, say): every queued write would meet the same.
                        p.done.completeExceptionally(e);
                        return Outcome.DONE;
                    }
                    lastError = e.getMessage();
                    return Outcome.RETRY;
                }
                session = a.json().path("session").asLong();
                if (session <= 0) {
                    throw new RosterException(a.status(), "protocol", "POST /v1/sessions answered no session: " + a.body());
                }
                lastSeq = 0;
            } catch (RosterException e) {
                if (!e.retryable()) {
                    throw e;
                }
                lastError = e.getMessage();
                return Outcome.RETRY;
            }
        }
        if (p.session != session) {
            p.session = session;
            p.seq = lastSeq + 1;
        }
        Transport.Answer a;
        try {
            a = transport.send(p.method, p.path, p.body, p.contentType,
                    Map.of("Roster-Session", Long.toString(p.session), "Roster-Seq", Long.toString(p.seq)));
        } catch (RosterException e) {
            if (!e.retryable()) {
                throw e;
            }
            p.maybeApplied = true;
            lastError = e.getMessage();
            return Outcome.RETRY;
        }
        if (a.status() / 100 == 2) {
            lastSeq = p.seq;
            p.done.complete(a.json());
            return Outcome.DONE;
        }
        RosterException e = Transport.error(p.what(), a);
        if (e.retryable()) {
            p.maybeApplied = true;
            lastError = e.getMessage();
            return Outcome.RETRY;
        }
        switch (e.kind()) {
            case "cas_failed":
                // A reply the state machine stored: the sequence number is used.
                lastSeq = p.seq;
                p.done.completeExceptionally(e);
                return Outcome.DONE;
            case "sequence_gap":
                // This number was never applied: send it again as the first of a new session.
                session = 0;
                return Outcome.AGAIN;
            case "unknown_session":
                session = 0;
                if (!p.maybeApplied) {
                    return Outcome.AGAIN;
                }
                p.done.completeExceptionally(new RosterException(e.status(), "ambiguous", e.serverMessage()
                        + "; the write had been sent before its session was dropped and may have applied once"));
                return Outcome.DONE;
            default:
                // A refusal. Some refusals use the sequence number (the state machine's own),
                // some come before it (authority, a malformed body): a new session for the
                // rest leaves no gap either way.
                session = 0;
                p.done.completeExceptionally(e);
                return Outcome.DONE;
        }
    }
}
