package dev.roster.client;

/**
 * An event stream asked to resume from a revision older than the node keeps (HTTP 410
 * {@code compacted}): list the state again and stream from the list's revision.
 */
public class CompactedException extends RosterException {
    private static final long serialVersionUID = 1L;

    private final long oldestAvailable;

    public CompactedException(String message, long oldestAvailable) {
        super(410, "compacted", message);
        this.oldestAvailable = oldestAvailable;
    }

    public long oldestAvailable() {
        return oldestAvailable;
    }
}
