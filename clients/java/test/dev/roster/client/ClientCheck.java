package dev.roster.client;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
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
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The Java client's checks against a real cluster, driven by tests/tests/java_client.rs.
 * One mode per run; each prints what it saw, one fact per line, and exits 1 with
 * "FAIL: why" when a check fails. Modes that wait for the driver (an outage) read one line
 * from stdin.
 *
 * <pre>
 *   member  ENDPOINTS TOKEN_FILE SERVER LAUNCH_PROGRAM  register, heartbeat, kv, errors, launch, deregister (exit 3)
 *   stay    ENDPOINTS TOKEN_FILE SERVER                 register and heartbeat until killed
 *   outage  ENDPOINTS TOKEN_FILE CAPACITY WRITES        queue writes while the driver has stopped every node
 *   stream  ENDPOINTS TOKEN_FILE WRITES                 a paced stream of writes across a leader change
 * </pre>
 */
public final class ClientCheck {
    private ClientCheck() {}

    public static void main(String[] args) throws Exception {
        try {
            switch (args[0]) {
                case "member" -> member(args[1], Path.of(args[2]), Long.parseLong(args[3]), args[4]);
                case "stay" -> stay(args[1], Path.of(args[2]), Long.parseLong(args[3]));
                case "outage" -> outage(args[1], Path.of(args[2]), Integer.parseInt(args[3]), Integer.parseInt(args[4]));
                case "stream" -> stream(args[1], Path.of(args[2]), Integer.parseInt(args[3]));
                default -> throw new IllegalArgumentException("unknown mode " + args[0]);
            }
        } catch (Failed f) {
            System.out.println("FAIL: " + f.getMessage());
            System.out.flush();
            System.exit(1);
        }
        System.out.flush();
        System.exit(0);
    }

    static final class Failed extends Exception {
        private static final long serialVersionUID = 1L;

        Failed(String why) {
            super(why);
        }
    }

    static void check(boolean ok, String what) throws Failed {
        if (!ok) {
            throw new Failed(what);
        }
    }

    static void say(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static RosterClient.Builder client(String endpoints, Path tokenFile) {
        return RosterClient.builder().endpoints(endpoints).tokenFile(tokenFile).heartbeatInterval(Duration.ofMillis(300))
                .writeWait(Duration.ofSeconds(30));
    }

    static void member(String endpoints, Path tokenFile, long server, String launchProgram) throws Failed {
        try (RosterClient c = client(endpoints, tokenFile).build()) {
            Member m = c.register(Registration.of("java-interpreter", server).withService("127.0.0.1", 9090)
                    .withLabels(Map.of("interpreter", "spark", "note", "n-1")));
            say("registered " + m.id());
            long deadline = System.currentTimeMillis() + 10_000;
            while (m.heartbeatsSent() < 3 && System.currentTimeMillis() < deadline) {
                sleep(100);
            }
            check(m.heartbeatsSent() >= 3, "3 heartbeats within 10 s; sent " + m.heartbeatsSent() + ", last failure " + m.lastFailure());
            say("heartbeats " + m.heartbeatsSent());
            JsonNode entry = c.process(m.id()).orElseThrow(() -> new IllegalStateException("registered process not found"));
            check(entry.toString().contains("\"interpreter\":\"spark\""), "labels in the entry: " + entry);
            say("labels ok");

            // kv: put, get, cas (both ways), list, delete.
            long r1 = c.kvPut("java/a", "1");
            check(c.kvGet("java/a").map(KvValue::value).equals(Optional.of("1")), "get after put");
            long r2 = c.cas("java/a", "1", "2");
            check(r2 > r1, "cas revision " + r2 + " after put revision " + r1);
            try {
                c.cas("java/a", "1", "3");
                throw new Failed("a cas with a stale expected value swapped");
            } catch (CasFailedException e) {
                check("2".equals(e.current()) && e.status() == 409, "cas_failed carries the current value: " + e.current());
                say("cas_failed " + e.getMessage());
            }
            c.cas("java/b", null, "x");
            try {
                c.cas("java/b", null, "y");
                throw new Failed("?absent swapped over a set key");
            } catch (CasFailedException e) {
                check("x".equals(e.current()), "absent cas found " + e.current());
            }
            KvList list = c.kvList("java/", "java0", 10);
            check(list.items().size() == 2 && list.items().get(0).key().equals("java/a"), "list: " + list);
            c.kvDelete("java/a");
            check(c.kvGet("java/a").isEmpty(), "get after delete");
            try {
                c.kvDeleteIf("java/b", "nope");
                throw new Failed("delete with a wrong expected value deleted");
            } catch (CasFailedException e) {
                check("x".equals(e.current()), "delete-if found " + e.current());
            }
            say("kv ok");

            // Errors keep the server's kind and message.
            try (RosterClient bad = RosterClient.builder().endpoints(endpoints).token("not-the-token").shutdownHook(false).build()) {
                bad.kvGet("java/b");
                throw new Failed("a wrong token read a key");
            } catch (RosterException e) {
                check(e.status() == 403 || e.status() == 401, "wrong token: " + e.status() + " " + e.getMessage());
                say("wrong token " + e.kind() + ": " + e.serverMessage());
            }
            try {
                c.heartbeat(999_999, Resources.sample());
                throw new Failed("a heartbeat for an unknown process was accepted");
            } catch (RosterException e) {
                check(e.status() == 404, "unknown process heartbeat: " + e.getMessage());
                say("unknown member " + e.kind() + ": " + e.serverMessage());
            }
            try {
                c.register(Registration.of("nowhere", 999));
                throw new Failed("a registration on an unknown server was accepted");
            } catch (RosterException e) {
                say("unknown server " + e.kind() + ": " + e.serverMessage());
            }
            // The queue carries on after a refusal: the next write applies.
            c.kvPut("java/after-refusal", "ok");
            check(c.kvGet("java/after-refusal").isPresent(), "a write after a refusal applied");

            // Events: resume from a revision sees the puts above, in order.
            List<Event> seen = new CopyOnWriteArrayList<>();
            try (EventStream s = c.events(r1 - 1, seen::add)) {
                long until = System.currentTimeMillis() + 10_000;
                while (seen.size() < 2 && System.currentTimeMillis() < until) {
                    sleep(50);
                }
            }
            check(seen.size() >= 2 && seen.get(0).revision() == r1 && seen.get(0).type().equals("kv_put")
                    && seen.get(1).revision() == r2, "events from " + (r1 - 1) + ": " + seen);
            say("events ok from " + (r1 - 1));

            LaunchResult launched = c.launch("java-launched", launchProgram, List.of("30"), Map.of("by", "java"));
            check(launched.process() > 0 && launched.server() > 0, "launch: " + launched);
            say("launched process " + launched.process() + " on server " + launched.server());

            m.setExitStatus(3);
            m.close();
            check(c.process(m.id()).isEmpty(), "process " + m.id() + " still listed after close");
            say("deregistered " + m.id());
        }
    }

    static void stay(String endpoints, Path tokenFile, long server) throws Failed {
        RosterClient c = client(endpoints, tokenFile).build();
        Member m = c.register(Registration.of("java-stay", server).withLabels(Map.of("interpreter", "python")));
        say("registered " + m.id());
        while (true) {
            sleep(1_000);
            say("heartbeats " + m.heartbeatsSent());
        }
    }

    /** The chain `cas(key, i, i+1)`: one applied twice, or one lost, breaks every later one. */
    static CompletableFuture<Long> link(RosterClient c, String key, int i) {
        return c.casAsync(key, i == 0 ? null : Integer.toString(i), Integer.toString(i + 1));
    }

    static void outage(String endpoints, Path tokenFile, int capacity, int writes) throws Exception {
        try (RosterClient c = client(endpoints, tokenFile).queueCapacity(capacity).closeDrain(Duration.ofSeconds(30)).build()) {
            long start = c.kvPut("outage/start", "1");
            say("ready " + start);
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8)).readLine(); // every node is down
            List<CompletableFuture<Long>> queued = new ArrayList<>();
            int rejected = 0;
            String firstRejection = null;
            for (int i = 0; i < writes; i++) {
                try {
                    queued.add(link(c, "outage/counter", i));
                } catch (QueueFullException e) {
                    rejected++;
                    firstRejection = firstRejection == null ? e.getMessage() : firstRejection;
                }
            }
            say("queued " + queued.size() + " rejected " + rejected);
            if (firstRejection != null) {
                say("queue full: " + firstRejection);
            }
            sleep(1_000);
            check(c.pendingWrites() == queued.size(), "writes left the queue with every node down: " + c.pendingWrites());
            say("pending " + c.pendingWrites() + " last error: " + c.lastWriteError());
            say("waiting");
            List<Long> revisions = await(queued, 90);
            check(c.kvGet("outage/counter").map(KvValue::value).equals(Optional.of(Integer.toString(queued.size()))),
                    "counter after delivery: " + c.kvGet("outage/counter"));
            checkEvents(c, start, "outage/counter", queued.size(), revisions);
            say("delivered " + queued.size());
        }
    }

    static void stream(String endpoints, Path tokenFile, int writes) throws Exception {
        try (RosterClient c = client(endpoints, tokenFile).queueCapacity(writes).build()) {
            long start = c.kvPut("stream/start", "1");
            say("ready " + start);
            List<Event> events = new CopyOnWriteArrayList<>();
            try (EventStream s = c.events(start, e -> {
                if (e.type().equals("kv_put") && e.data().path("key").asText().equals("stream/counter")) {
                    events.add(e);
                }
            })) {
                AtomicInteger acked = new AtomicInteger();
                List<CompletableFuture<Long>> queued = new ArrayList<>();
                for (int i = 0; i < writes; i++) {
                    CompletableFuture<Long> f = link(c, "stream/counter", i);
                    f.thenRun(() -> {
                        int n = acked.incrementAndGet();
                        if (n % 50 == 0) {
                            say("acked " + n);
                        }
                    });
                    queued.add(f);
                    sleep(10);
                }
                List<Long> revisions = await(queued, 90);
                long until = System.currentTimeMillis() + 20_000;
                while (events.size() < writes && System.currentTimeMillis() < until) {
                    sleep(100);
                }
                check(events.size() == writes, "the stream saw " + events.size() + " of " + writes + " puts");
                for (int i = 0; i < writes; i++) {
                    Event e = events.get(i);
                    check(e.data().path("value").asText().equals(Integer.toString(i + 1)) && e.revision() == revisions.get(i),
                            "event " + i + " is " + e + ", expected value " + (i + 1) + " at revision " + revisions.get(i));
                }
                say("stream events ok, reconnects " + s.reconnects());
            }
            check(c.kvGet("stream/counter").map(KvValue::value).equals(Optional.of(Integer.toString(writes))),
                    "counter after the stream: " + c.kvGet("stream/counter"));
            checkEvents(c, start, "stream/counter", writes, null);
            say("delivered " + writes);
        }
    }

    /** Waits for every write; each must have applied, in order (rising revisions). */
    static List<Long> await(List<CompletableFuture<Long>> writes, int seconds) throws Exception {
        long deadline = System.currentTimeMillis() + seconds * 1_000L;
        List<Long> revisions = new ArrayList<>();
        for (int i = 0; i < writes.size(); i++) {
            long left = Math.max(1, deadline - System.currentTimeMillis());
            try {
                revisions.add(writes.get(i).get(left, TimeUnit.MILLISECONDS));
            } catch (ExecutionException e) {
                throw new Failed("write " + i + " failed: " + e.getCause().getMessage());
            } catch (java.util.concurrent.TimeoutException e) {
                throw new Failed("write " + i + " not answered within " + seconds + " s");
            }
            check(i == 0 || revisions.get(i) > revisions.get(i - 1), "write " + i + " applied before write " + (i - 1));
        }
        say("answered " + writes.size());
        return revisions;
    }

    /** A fresh stream from `start` holds exactly `n` puts of `key`, values 1..n in order. */
    static void checkEvents(RosterClient c, long start, String key, int n, List<Long> revisions) throws Exception {
        List<Event> puts = new CopyOnWriteArrayList<>();
        CompletableFuture<Long> caughtUp = new CompletableFuture<>();
        long now = c.status().path("revision").asLong();
        try (EventStream s = c.events(start, new EventListener() {
            @Override
            public void onEvent(Event e) {
                if (e.type().equals("kv_put") && e.data().path("key").asText().equals(key)) {
                    puts.add(e);
                }
                if (e.revision() >= now) {
                    caughtUp.complete(e.revision());
                }
            }

            @Override
            public void onProgress(long revision) {
                if (revision >= now) {
                    caughtUp.complete(revision);
                }
            }
        })) {
            caughtUp.get(20, TimeUnit.SECONDS);
        }
        check(puts.size() == n, "events after " + start + " hold " + puts.size() + " puts of " + key + ", expected exactly " + n);
        for (int i = 0; i < n; i++) {
            check(puts.get(i).data().path("value").asText().equals(Integer.toString(i + 1)), "put " + i + " is " + puts.get(i));
            if (revisions != null) {
                check(puts.get(i).revision() == revisions.get(i), "put " + i + " at " + puts.get(i).revision() + " answered " + revisions.get(i));
            }
        }
        say("events exactly once: " + n + " puts of " + key);
    }

    static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
