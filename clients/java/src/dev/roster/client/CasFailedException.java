package dev.roster.client;

/** A compare-and-set that did not swap (HTTP 409 {@code cas_failed}): the key held another value. */
public class CasFailedException extends RosterException {
    private static final long serialVersionUID = 1L;

    private final String current;
    private final long revision;

    public CasFailedException(String message, String current, long revision) {
        super(409, "cas_failed", message);
        this.current = current;
        this.revision = revision;
    }

    /** The value the key holds, or null when it holds none. */
    public String current() {
        return current;
    }

    /** The revision at which the comparison was made. */
    public long revision() {
        return revision;
    }
}
