package dev.roster.client;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.net.ConnectException;
import java.net.URI;
import java.net.URLEncoder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A client of a Roster cluster over its HTTP API (docs/http.md).
 *
 * <ul>
 *   <li>Writes (kv put, cas, delete; register and deregister) go through a bounded, ordered
 *       retry queue with its own thread, as commands of one session: each applies exactly
 *       once, in submission order, across leader changes and outages. The {@code *Async}
 *       methods return at once; the others wait up to the write wait for the answer.
 *   <li>Reads, heartbeats and launches are sent directly, moving to the next node when one
 *       does not answer.
 *   <li>Errors are {@link RosterException}s that keep the server's kind and message.
 * </ul>
 *
 * Close it (or let its shutdown hook do so at JVM exit) to deregister its members and
 * deliver what is queued.
 */
public final class RosterClient implements AutoCloseable {
    private final Transport transport;
    private final WriteQueue queue;
    private final Builder options;
    private final List<Member> members = new CopyOnWriteArrayList<>();
    private final Thread hook;
    private volatile boolean closed;

    public static Builder builder() {
        return new Builder();
    }

    /** Options; every one has a default but the endpoints. */
    public static final class Builder {
        private final List<URI> endpoints = new ArrayList<>();
        private String token;
        private int queueCapacity = 1_024;
        private Duration connectTimeout = Duration.ofSeconds(2);
        private Duration requestTimeout = Duration.ofSeconds(10);
        private Duration writeWait = Duration.ofSeconds(60);
        private Duration readRetry = Duration.ofSeconds(10);
        private Duration heartbeatInterval = Duration.ofSeconds(1);
        private Duration closeDrain = Duration.ofSeconds(10);
        private boolean shutdownHook = true;

        /** Nodes' HTTP addresses, e.g. {@code http://10.0.0.1:7501}; any node answers. */
        public Builder endpoints(String... urls) {
            for (String u : urls) {
                for (String one : u.split(",")) {
                    String s = one.trim();
                    if (s.isEmpty()) {
                        continue;
                    }
                    URI uri = URI.create(s.endsWith("/") ? s : s + "/");
                    if (!"http".equals(uri.getScheme()) && !"https".equals(uri.getScheme()) || uri.getHost() == null) {
                        throw new IllegalArgumentException("endpoint " + s + ": expected http://HOST:PORT or https://HOST:PORT");
                    }
                    endpoints.add(uri);
                }
            }
            return this;
        }

        /** The bearer token (admin, or a role that may do what the caller does; docs/security.md). */
        public Builder token(String token) {
            this.token = token == null ? null : token.trim();
            return this;
        }

        /** Reads the bearer token from a file (e.g. the cluster's token file, or a member token). */
        public Builder tokenFile(Path file) {
            try {
                return token(Files.readString(file));
            } catch (IOException e) {
                throw new IllegalArgumentException("cannot read the token file " + file + ": " + Transport.describe(e), e);
            }
        }

        /** Most writes the retry queue holds; one more is refused with {@link QueueFullException}. */
        public Builder queueCapacity(int n) {
            this.queueCapacity = n;
            return this;
        }

        public Builder connectTimeout(Duration d) {
            this.connectTimeout = d;
            return this;
        }

        /** How long one HTTP request may take (the server answers a write within 5 s). */
        public Builder requestTimeout(Duration d) {
            this.requestTimeout = d;
            return this;
        }

        /** How long the blocking write methods wait; the write stays queued after that. */
        public Builder writeWait(Duration d) {
            this.writeWait = d;
            return this;
        }

        /** How long a read keeps trying other nodes while none answers. */
        public Builder readRetry(Duration d) {
            this.readRetry = d;
            return this;
        }

        public Builder heartbeatInterval(Duration d) {
            this.heartbeatInterval = d;
            return this;
        }

        /** How long close() keeps delivering queued writes before failing the rest. */
        public Builder closeDrain(Duration d) {
            this.closeDrain = d;
            return this;
        }

        /** Whether JVM exit closes the client (deregistering its members). Default on. */
        public Builder shutdownHook(boolean on) {
            this.shutdownHook = on;
            return this;
        }

        public RosterClient build() {
            if (endpoints.isEmpty()) {
                throw new IllegalArgumentException("no endpoints: give at least one node's HTTP address, e.g. http://10.0.0.1:7501");
            }
            if (heartbeatInterval.isZero() || heartbeatInterval.isNegative()) {
                throw new IllegalArgumentException("heartbeat interval " + heartbeatInterval + ": it must be positive");
            }
            return new RosterClient(this);
        }
    }

    private RosterClient(Builder b) {
        this.options = b;
        this.transport = new Transport(b.endpoints, b.token, b.connectTimeout, b.requestTimeout);
        this.queue = new WriteQueue(transport, b.queueCapacity);
        if (b.shutdownHook) {
            hook = new Thread(this::closeFromHook, "roster-client-shutdown");
            Runtime.getRuntime().addShutdownHook(hook);
        } else {
            hook = null;
        }
    }

    // ---- writes, exactly once, through the queue ----

    /** Queues {@code PUT /v1/kv/KEY}; completes with the revision. */
    public CompletableFuture<Long> kvPutAsync(String key, String value) {
        return submit("PUT", kvPath(key), value, "text/plain; charset=utf-8").thenApply(j -> j.path("revision").asLong());
    }

    public long kvPut(String key, String value) {
        return await(kvPutAsync(key, value), "PUT " + kvPath(key));
    }

    /**
     * Queues a compare-and-set: the key becomes {@code value} if it holds {@code expected}
     * ({@code null}: if it holds nothing). Completes with the revision, or fails with
     * {@link CasFailedException} carrying the value found.
     */
    public CompletableFuture<Long> casAsync(String key, String expected, String value) {
        String path = kvPath(key) + (expected == null ? "?absent" : "?cas=" + query(expected));
        return submit("PUT", path, value, "text/plain; charset=utf-8").thenApply(j -> j.path("revision").asLong());
    }

    public long cas(String key, String expected, String value) {
        return await(casAsync(key, expected, value), "PUT " + kvPath(key) + "?cas");
    }

    /** Queues {@code DELETE /v1/kv/KEY}; completes with the revision. */
    public CompletableFuture<Long> kvDeleteAsync(String key) {
        return submit("DELETE", kvPath(key), null, null).thenApply(j -> j.path("revision").asLong());
    }

    public long kvDelete(String key) {
        return await(kvDeleteAsync(key), "DELETE " + kvPath(key));
    }

    /** Deletes the key only if it holds {@code expected}; else {@link CasFailedException}. */
    public long kvDeleteIf(String key, String expected) {
        return await(submit("DELETE", kvPath(key) + "?cas=" + query(expected), null, null).thenApply(j -> j.path("revision").asLong()),
                "DELETE " + kvPath(key) + "?cas");
    }

    /** Writes waiting in the retry queue. */
    public int pendingWrites() {
        return queue.pending();
    }

    /** Why the queue's head has not been delivered yet, or null. */
    public String lastWriteError() {
        return queue.lastError();
    }

    private CompletableFuture<JsonNode> submit(String method, String path, String body, String contentType) {
        if (closed) {
            throw new RosterException(0, "closed", method + " " + path + ": the client is closed");
        }
        return queue.submit(method, path, body, contentType);
    }

    private <T> T await(CompletableFuture<T> f, String what) {
        try {
            return f.get(options.writeWait.toMillis(), TimeUnit.MILLISECONDS);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof RosterException r) {
                throw r;
            }
            throw new RosterException(0, "protocol", what + ": " + Transport.describe(e.getCause()), e.getCause());
        } catch (TimeoutException e) {
            throw new RosterException(0, "pending", what + ": no answer within " + options.writeWait.toMillis()
                    + " ms (last error: " + queue.lastError() + "); the write stays queued and will apply once, in order");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new RosterException(0, "closed", what + ": interrupted while waiting; the write stays queued");
        }
    }

    // ---- membership ----

    /**
     * Registers a process (exactly once, through the queue) and starts heartbeating it.
     * Close the member, or the client, to deregister it.
     */
    public Member register(Registration r) {
        ObjectNode body = Transport.JSON.createObjectNode();
        body.put("name", r.name());
        body.put("server", r.server());
        body.put("host", r.host());
        if (r.port() != null) {
            body.put("port", r.port());
        }
        ObjectNode labels = body.putObject("labels");
        r.labels().forEach(labels::put);
        // Fixed here, not by the node: a repeat must be the same command to be answered as one.
        body.put("started_at_unix_ms", System.currentTimeMillis());
        JsonNode answer = await(submit("POST", "/v1/processes", body.toString(), "application/json"), "POST /v1/processes");
        long id = answer.path("id").asLong();
        if (id <= 0) {
            throw new RosterException(0, "protocol", "POST /v1/processes answered no process id: " + answer);
        }
        Member m = new Member(this, id, answer.path("revision").asLong(), options.heartbeatInterval.toMillis());
        members.add(m);
        return m;
    }

    /** One heartbeat for process {@code id}, tried on each node at most once. */
    public void heartbeat(long id, Resources resources) {
        String path = "/v1/processes/" + id + "/heartbeat";
        RosterException last = null;
        for (int i = 0; i < transport.endpoints().size(); i++) {
            try {
                Transport.Answer a = transport.send("PUT", path, resources.json(), "application/json", Map.of());
                if (a.status() / 100 == 2) {
                    return;
                }
                last = Transport.error("PUT " + path, a);
                if (!last.retryable()) {
                    throw last;
                }
                transport.next(a.from());
            } catch (RosterException e) {
                if (!e.retryable()) {
                    throw e;
                }
                last = e;
            }
        }
        throw last;
    }

    /** Deregisters process {@code id} with its exit status (exactly once, through the queue). */
    public long deregister(long id, int exitStatus) {
        String path = "/v1/processes/" + id + "?exit=" + exitStatus;
        return await(submit("DELETE", path, null, null), "DELETE " + path).path("revision").asLong();
    }

    void forget(Member m) {
        members.remove(m);
    }

    /**
     * Asks the cluster to start {@code program} on the idlest server ({@code POST
     * /v1/launch}). Not repeated after a request went out (a launch is not a session
     * write): only a node that refused the connection is passed over.
     */
    public LaunchResult launch(String name, String program, List<String> args, Map<String, String> labels) {
        ObjectNode body = Transport.JSON.createObjectNode();
        body.put("name", name);
        body.put("program", program);
        ArrayNode a = body.putArray("args");
        args.forEach(a::add);
        ObjectNode l = body.putObject("labels");
        labels.forEach(l::put);
        RosterException last = null;
        for (int i = 0; i < transport.endpoints().size(); i++) {
            try {
                Transport.Answer answer = transport.send("POST", "/v1/launch", body.toString(), "application/json", Map.of());
                if (answer.status() / 100 != 2) {
                    throw Transport.error("POST /v1/launch", answer);
                }
                JsonNode j = answer.json();
                return new LaunchResult(j.path("server").asLong(), j.path("process").asLong());
            } catch (RosterException e) {
                if (!(e.getCause() instanceof ConnectException)) {
                    throw e;
                }
                last = e;
            }
        }
        throw last;
    }

    // ---- reads ----

    /** A key's value, read linearizably; empty when it is not set. */
    public Optional<KvValue> kvGet(String key) {
        Transport.Answer a = read(kvPath(key), Map.of("Accept", "application/json"), true);
        if (a.status() == 404) {
            return Optional.empty();
        }
        JsonNode j = a.json();
        return Optional.of(new KvValue(j.path("key").asText(), j.path("value").asText(), j.path("revision").asLong()));
    }

    /**
     * Keys in {@code [start, end)} ({@code end} null: to the last), at most {@code limit}, read
     * page by page (a node answers at most 1 MiB of them at once, and names where the next
     * page starts); the revision is the first page's.
     */
    public KvList kvList(String start, String end, int limit) {
        List<KvItem> items = new ArrayList<>();
        long revision = -1;
        String from = start;
        while (items.size() < limit) {
            String path = "/v1/kv?start=" + query(from) + (end == null ? "" : "&end=" + query(end))
                    + "&limit=" + (limit - items.size());
            JsonNode j = read(path, Map.of(), false).json();
            if (revision < 0) {
                revision = j.path("revision").asLong();
            }
            for (JsonNode item : j.path("items")) {
                items.add(new KvItem(item.path("key").asText(), item.path("value").asText()));
            }
            JsonNode next = j.path("next");
            if (!next.isTextual()) {
                break;
            }
            from = next.asText();
        }
        return new KvList(Math.max(revision, 0), List.copyOf(items));
    }

    /** The leader's view, as {@code GET /v1/status} answers it. */
    public JsonNode status() {
        return read("/v1/status", Map.of(), false).json();
    }

    /** A process entry; empty when the cluster does not know it (never registered, or gone). */
    public Optional<JsonNode> process(long id) {
        Transport.Answer a = read("/v1/processes/" + id, Map.of(), true);
        return a.status() == 404 ? Optional.empty() : Optional.of(a.json());
    }

    /** A GET, on the next node while none answers, for up to the read retry time. */
    private Transport.Answer read(String path, Map<String, String> headers, boolean notFoundIsAnswer) {
        long deadline = System.nanoTime() + options.readRetry.toNanos();
        long backoff = WriteQueue.BACKOFF_MIN_MS;
        while (true) {
            RosterException e;
            try {
                Transport.Answer a = transport.send("GET", path, null, null, headers);
                if (a.status() / 100 == 2 || a.status() == 404 && notFoundIsAnswer && isNotFound(a)) {
                    return a;
                }
                e = Transport.error("GET " + path, a);
            } catch (RosterException thrown) {
                e = thrown;
            }
            if (!e.retryable() || System.nanoTime() + backoff * 1_000_000 - deadline > 0) {
                throw e;
            }
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException ie) {
                Thread.currentThread().interrupt();
                throw e;
            }
            backoff = Math.min(backoff * 2, WriteQueue.BACKOFF_MAX_MS);
        }
    }

    private static boolean isNotFound(Transport.Answer a) {
        RosterException e = Transport.error("", a);
        return e.kind().equals("not_found") || e.kind().equals("unknown_member");
    }

    // ---- events ----

    /**
     * Streams change events after revision {@code after} (null: from now) to {@code
     * listener}, resuming by itself after a broken connection. Close the stream to stop.
     */
    public EventStream events(Long after, EventListener listener) {
        long from = after != null ? after : status().path("revision").asLong();
        return new EventStream(transport, from, listener);
    }

    // ---- closing ----

    /** Deregisters every member still open, delivers queued writes (up to the close drain time), stops. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        RosterException first = null;
        for (Member m : members) {
            try {
                m.close();
            } catch (RosterException e) {
                first = first == null ? e : first;
            }
        }
        closed = true;
        int left = queue.close(options.closeDrain.toMillis());
        if (hook != null) {
            try {
                Runtime.getRuntime().removeShutdownHook(hook);
            } catch (IllegalStateException e) {
                // Already shutting down: the hook is what called us.
            }
        }
        if (first != null) {
            throw first;
        }
        if (left > 0) {
            throw new RosterException(0, "closed", left + " queued writes were not delivered within "
                    + options.closeDrain.toMillis() + " ms of close (last error: " + queue.lastError() + ")");
        }
    }

    private void closeFromHook() {
        try {
            close();
        } catch (RosterException e) {
            System.err.println("roster client at exit: " + e.getMessage());
        }
    }

    static String kvPath(String key) {
        if (key == null || key.isEmpty()) {
            throw new IllegalArgumentException("a key must not be empty");
        }
        StringBuilder p = new StringBuilder("/v1/kv/");
        String[] parts = key.split("/", -1);
        for (int i = 0; i < parts.length; i++) {
            if (i > 0) {
                p.append('/');
            }
            p.append(query(parts[i]));
        }
        return p.toString();
    }

    static String query(String s) {
        return URLEncoder.encode(s, StandardCharsets.UTF_8).replace("+", "%20");
    }
}
