package dev.roster.client;

import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * A process registered with the cluster. It heartbeats on a thread of its own, with this
 * JVM's CPU and memory, every interval; {@link #close()} stops that and deregisters it with
 * its exit status (through the client's retry queue, so exactly once). A member whose
 * heartbeat the cluster no longer knows (it was expired or deleted) stops heartbeating and
 * says so in {@link #lost()}.
 */
public final class Member implements AutoCloseable {
    private final RosterClient client;
    private final long id;
    private final long registeredRevision;
    private final ScheduledExecutorService beats;
    private final AtomicLong sent = new AtomicLong();
    private volatile RosterException lastFailure;
    private volatile RosterException lost;
    private volatile int exitStatus;
    private boolean closed;

    Member(RosterClient client, long id, long registeredRevision, long intervalMillis) {
        this.client = client;
        this.id = id;
        this.registeredRevision = registeredRevision;
        this.beats = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "roster-heartbeat-" + id);
            t.setDaemon(true);
            return t;
        });
        beats.scheduleWithFixedDelay(this::beat, 0, intervalMillis, TimeUnit.MILLISECONDS);
    }

    /** The cluster's process id. */
    public long id() {
        return id;
    }

    public long registeredRevision() {
        return registeredRevision;
    }

    /** Heartbeats the cluster accepted. */
    public long heartbeatsSent() {
        return sent.get();
    }

    /** The last heartbeat's failure, if the last one failed. */
    public RosterException lastFailure() {
        return lastFailure;
    }

    /** Why the cluster no longer knows this member (expired or deleted), or null. */
    public RosterException lost() {
        return lost;
    }

    /** The exit status {@link #close()} reports (0 unless set). */
    public void setExitStatus(int status) {
        this.exitStatus = status;
    }

    private void beat() {
        try {
            client.heartbeat(id, Resources.sample());
            sent.incrementAndGet();
            lastFailure = null;
        } catch (RosterException e) {
            lastFailure = e;
            if (e.kind().equals("unknown_member") || e.kind().equals("not_found")) {
                lost = e;
                beats.shutdown();
            }
        } catch (RuntimeException e) {
            lastFailure = new RosterException(0, "protocol", "heartbeat of process-" + id + ": " + Transport.describe(e), e);
        }
    }

    /** Stops heartbeating and deregisters with the exit status; waits for the cluster's answer. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        beats.shutdownNow();
        client.forget(this);
        if (lost == null) {
            client.deregister(id, exitStatus);
        }
    }
}
