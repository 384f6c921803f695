package dev.roster.client;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.ThreadLocalRandom;

/**
 * A running subscription to {@code GET /v1/events} (NDJSON), on a thread of its own. When
 * the connection breaks (a node stopped, the network failed) it connects again, to the
 * next node if need be, with {@code ?after=} the last revision it delivered or heard of in
 * a progress line: no event is delivered twice or skipped. A stream that hears nothing,
 * not even a progress line, for {@link #SILENCE_MS} is taken as broken. Close it to stop.
 */
public final class EventStream implements AutoCloseable {
    /** The server sends a progress line every 5 s when idle: three missed ones mean a dead link. */
    public static final long SILENCE_MS = 15_000;

    private final Transport transport;
    private final EventListener listener;
    private final Thread thread;
    private volatile long after;
    private volatile boolean closed;
    private volatile InputStream body;
    private volatile long lastLineAtMillis;
    private volatile int reconnects;

    EventStream(Transport transport, long after, EventListener listener) {
        this.transport = transport;
        this.after = after;
        this.listener = listener;
        this.thread = new Thread(this::run, "roster-events");
        this.thread.setDaemon(true);
        this.thread.start();
    }

    /** Every event up to this revision was delivered. */
    public long revision() {
        return after;
    }

    /** How many times the stream connected again after a break. */
    public int reconnects() {
        return reconnects;
    }

    @Override
    public void close() {
        closed = true;
        closeBody();
        thread.interrupt();
        try {
            thread.join(5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private void closeBody() {
        InputStream b = body;
        if (b != null) {
            try {
                b.close();
            } catch (IOException ignored) {
                // Closing is how the watchdog and close() end a read; a failure here changes nothing.
            }
        }
    }

    private void run() {
        Thread watchdog = new Thread(this::watch, "roster-events-watchdog");
        watchdog.setDaemon(true);
        watchdog.start();
        long backoff = WriteQueue.BACKOFF_MIN_MS;
        try {
            while (!closed) {
                RosterException fatal = streamOnce();
                if (fatal != null) {
                    if (!closed) {
                        listener.onError(fatal);
                    }
                    return;
                }
                if (closed) {
                    return;
                }
                reconnects++;
                Thread.sleep(ThreadLocalRandom.current().nextLong(backoff / 2, backoff + 1));
                backoff = Math.min(backoff * 2, WriteQueue.BACKOFF_MAX_MS);
            }
        } catch (InterruptedException e) {
            // close() interrupts.
        } finally {
            closed = true;
            watchdog.interrupt();
        }
    }

    private void watch() {
        try {
            while (!closed) {
                Thread.sleep(1_000);
                if (body != null && System.currentTimeMillis() - lastLineAtMillis > SILENCE_MS) {
                    closeBody();
                }
            }
        } catch (InterruptedException e) {
            // The stream ended.
        }
    }

    /** One connection: null when it broke and should be opened again, else the error that ends the stream. */
    private RosterException streamOnce() {
        URI base = transport.current();
        String path = "/v1/events?after=" + after;
        HttpRequest request = transport.request(base, path).header("Accept", "application/x-ndjson").GET()
                .timeout(java.time.Duration.ofMillis(SILENCE_MS)).build();
        HttpResponse<InputStream> r;
        try {
            r = transport.http().send(request, HttpResponse.BodyHandlers.ofInputStream());
        } catch (IOException e) {
            transport.next(base);
            return null;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
        }
        body = r.body();
        lastLineAtMillis = System.currentTimeMillis();
        try (BufferedReader lines = new BufferedReader(new InputStreamReader(r.body(), StandardCharsets.UTF_8))) {
            if (r.statusCode() != 200) {
                StringBuilder text = new StringBuilder();
                for (String l; (l = lines.readLine()) != null; ) {
                    text.append(l);
                }
                RosterException e = Transport.error("GET " + path, new Transport.Answer(r.statusCode(), text.toString(), base));
                if (e.retryable()) {
                    transport.next(base);
                    return null;
                }
                return e;
            }
            for (String line; (line = lines.readLine()) != null; ) {
                lastLineAtMillis = System.currentTimeMillis();
                if (line.isBlank()) {
                    continue;
                }
                RosterException e = deliver(line, base);
                if (e != null) {
                    return e;
                }
            }
            return null;
        } catch (IOException e) {
            // Broken mid-stream (the node went away, or the watchdog closed a silent link).
            transport.next(base);
            return null;
        } finally {
            body = null;
        }
    }

    private RosterException deliver(String line, URI from) {
        JsonNode j;
        try {
            j = Transport.JSON.readTree(line);
        } catch (IOException e) {
            return new RosterException(0, "protocol", "event stream from " + from + ": a line is not JSON: " + Transport.abbreviate(line));
        }
        if (j.has("error")) {
            // A reader that fell behind what the node keeps: the stream ends with an error line.
            return Transport.error("GET /v1/events?after=" + after, new Transport.Answer(410, line, from));
        }
        if (j.has("progress")) {
            long rev = j.get("progress").path("revision").asLong();
            if (rev > after) {
                after = rev;
            }
            return callListener(() -> listener.onProgress(rev));
        }
        long rev = j.path("revision").asLong();
        if (rev <= after) {
            return null; // already delivered before a reconnect
        }
        Event event = new Event(rev, j.path("type").asText(), j.get("data"), j.path("text").asText());
        RosterException e = callListener(() -> listener.onEvent(event));
        after = rev;
        return e;
    }

    private static RosterException callListener(Runnable r) {
        try {
            r.run();
            return null;
        } catch (RuntimeException e) {
            return new RosterException(0, "listener_failed", "the event listener threw " + Transport.describe(e), e);
        }
    }
}
