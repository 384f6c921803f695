package dev.roster.client;

import java.util.Map;

/**
 * What a process registers as: its name, the server that hosts it, where it serves (host
 * and port, both optional) and its labels.
 */
public record Registration(String name, long server, String host, Integer port, Map<String, String> labels) {
    public Registration {
        if (name == null || name.isBlank()) {
            throw new IllegalArgumentException("a registration needs a name");
        }
        if (server <= 0) {
            throw new IllegalArgumentException("server " + server + ": give the id of the server that hosts the process");
        }
        if (port != null && (port < 1 || port > 65_535)) {
            throw new IllegalArgumentException("port " + port + " is not a TCP port (1-65535)");
        }
        host = host == null ? "" : host;
        labels = labels == null ? Map.of() : Map.copyOf(labels);
    }

    public static Registration of(String name, long server) {
        return new Registration(name, server, null, null, Map.of());
    }

    public Registration withLabels(Map<String, String> labels) {
        return new Registration(name, server, host, port, labels);
    }

    public Registration withService(String host, int port) {
        return new Registration(name, server, host, port, labels);
    }
}
