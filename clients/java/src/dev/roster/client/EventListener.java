package dev.roster.client;

/** Receives an event stream, on the stream's own thread, in revision order. */
public interface EventListener {
    void onEvent(Event event);

    /** Every event up to {@code revision} was delivered (the server says so every 5 s when idle). */
    default void onProgress(long revision) {}

    /**
     * The stream ended for good: a {@link CompactedException} (resume point too old), a
     * refusal such as {@code forbidden}, or a listener that threw. Lost connections are not
     * reported here: the stream resumes by itself from the last revision.
     */
    default void onError(RosterException error) {}
}
