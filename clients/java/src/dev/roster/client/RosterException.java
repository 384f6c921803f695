package dev.roster.client;

/**
 * An error the cluster answered, or one the client met on its way there. {@link #kind()} is
 * the server's stable error kind ({@code "not_found"}, {@code "forbidden"}, {@code
 * "sequence_gap"}, ...) or one of the client's own ({@code "unreachable"}, {@code
 * "queue_full"}, {@code "closed"}, {@code "pending"}, {@code "protocol"}); {@link
 * #getMessage()} is the server's one-line message, prefixed with the request it answers.
 */
public class RosterException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    private final int status;
    private final String kind;
    private final String serverMessage;

    public RosterException(int status, String kind, String message) {
        this(status, kind, message, null);
    }

    public RosterException(int status, String kind, String message, Throwable cause) {
        super(kind + ": " + message, cause);
        this.status = status;
        this.kind = kind;
        this.serverMessage = message;
    }

    /** The HTTP status, or 0 when no answer came (the client's own kinds). */
    public int status() {
        return status;
    }

    /** The server's error kind, e.g. {@code "forbidden"}, or the client's own. */
    public String kind() {
        return kind;
    }

    /** The message alone, without the kind. */
    public String serverMessage() {
        return serverMessage;
    }

    /**
     * Whether the same request may be sent again: no leader or busy (503), no answer in
     * time (504), a failed forward (502), a node that failed (500), or no answer at all.
     * Repeating a session write is safe: the cluster answers its stored reply.
     */
    public boolean retryable() {
        return status == 0 && kind.equals("unreachable") || status == 500 || status == 502 || status == 503
                || status == 504;
    }
}
