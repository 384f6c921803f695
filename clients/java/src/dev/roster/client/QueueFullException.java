package dev.roster.client;

/**
 * The retry queue holds as many writes as it may: the write was not queued and will not be
 * sent. The message says how many wait and why they have not gone (the last error).
 */
public class QueueFullException extends RosterException {
    private static final long serialVersionUID = 1L;

    private final int capacity;

    public QueueFullException(int capacity, String message) {
        super(0, "queue_full", message);
        this.capacity = capacity;
    }

    public int capacity() {
        return capacity;
    }
}
