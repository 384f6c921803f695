package dev.roster.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * One HTTP exchange with some node of the cluster. Any node answers (a follower forwards
 * writes to the leader itself), so the transport keeps one preferred endpoint and moves to
 * the next when one does not answer. It never retries by itself: callers decide what is
 * safe to repeat.
 */
final class Transport {
    static final ObjectMapper JSON = new ObjectMapper();

    private final List<URI> endpoints;
    private final String token;
    private final HttpClient http;
    private final Duration requestTimeout;
    private final AtomicInteger preferred = new AtomicInteger();

    Transport(List<URI> endpoints, String token, Duration connectTimeout, Duration requestTimeout) {
        if (endpoints.isEmpty()) {
            throw new IllegalArgumentException("no endpoints: give at least one node's HTTP address, e.g. http://10.0.0.1:7501");
        }
        this.endpoints = List.copyOf(endpoints);
        this.token = token;
        this.requestTimeout = requestTimeout;
        this.http = HttpClient.newBuilder().connectTimeout(connectTimeout).version(HttpClient.Version.HTTP_1_1).build();
    }

    HttpClient http() {
        return http;
    }

    List<URI> endpoints() {
        return endpoints;
    }

    /** The endpoint requests go to now. */
    URI current() {
        return endpoints.get(Math.floorMod(preferred.get(), endpoints.size()));
    }

    /** Moves to the next endpoint after `failed` did not answer (unless another thread did already). */
    void next(URI failed) {
        int seen = preferred.get();
        if (endpoints.get(Math.floorMod(seen, endpoints.size())).equals(failed)) {
            preferred.compareAndSet(seen, seen + 1);
        }
    }

    HttpRequest.Builder request(URI base, String pathAndQuery) {
        HttpRequest.Builder b = HttpRequest.newBuilder(base.resolve(pathAndQuery)).timeout(requestTimeout);
        if (token != null) {
            b.header("Authorization", "Bearer " + token);
        }
        return b;
    }

    /** An answer: status, body and the revision header if any. */
    record Answer(int status, String body, URI from) {
        JsonNode json() {
            try {
                return body.isBlank() ? JSON.createObjectNode() : JSON.readTree(body);
            } catch (IOException e) {
                throw new RosterException(status, "protocol",
                        "the answer of " + from + " is not JSON (" + e.getMessage() + "): " + abbreviate(body));
            }
        }
    }

    /**
     * Sends one request to the current endpoint. Throws a retryable "unreachable"
     * RosterException when no answer came, after moving to the next endpoint.
     */
    Answer send(String method, String pathAndQuery, String body, String contentType, Map<String, String> headers) {
        URI base = current();
        HttpRequest.Builder b = request(base, pathAndQuery);
        b.method(method, body == null ? HttpRequest.BodyPublishers.noBody() : HttpRequest.BodyPublishers.ofString(body));
        if (body != null) {
            b.header("Content-Type", contentType);
        }
        headers.forEach(b::header);
        try {
            HttpResponse<String> r = http.send(b.build(), HttpResponse.BodyHandlers.ofString());
            return new Answer(r.statusCode(), r.body(), base);
        } catch (IOException e) {
            next(base);
            throw new RosterException(0, "unreachable",
                    method + " " + pathAndQuery + ": no answer from " + base + " (" + describe(e) + ")", e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RosterException(0, "closed", method + " " + pathAndQuery + ": interrupted", e);
        }
    }

    /** The typed exception for an error answer, keeping the server's kind and message. */
    static RosterException error(String what, Answer a) {
        JsonNode error = null;
        try {
            error = JSON.readTree(a.body()).get("error");
        } catch (IOException | RuntimeException ignored) {
            // Not the documented shape (a proxy's page, say): named below with the raw body.
        }
        if (error == null || !error.hasNonNull("kind")) {
            return new RosterException(a.status(), "protocol",
                    what + ": HTTP " + a.status() + " from " + a.from() + " without an error body: " + abbreviate(a.body()));
        }
        String kind = error.get("kind").asText();
        String message = what + ": " + error.path("message").asText("(no message)");
        switch (kind) {
            case "cas_failed":
                JsonNode current = error.get("current");
                return new CasFailedException(message, current == null || current.isNull() ? null : current.asText(),
                        error.path("revision").asLong());
            case "compacted":
                return new CompactedException(message, error.path("oldest_available").asLong());
            default:
                return new RosterException(a.status(), kind, message);
        }
    }

    static String describe(Throwable e) {
        String m = e.getMessage();
        return e.getClass().getSimpleName() + (m == null ? "" : ": " + m);
    }

    static String abbreviate(String s) {
        return s.length() <= 200 ? s : s.substring(0, 200) + "...";
    }
}
