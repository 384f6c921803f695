package dev.roster.client;

import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;

/**
 * What a heartbeat reports: this JVM's CPU use (percent of the whole machine, from the
 * platform {@code OperatingSystemMXBean}) and memory in use (heap plus non-heap, from the
 * {@code MemoryMXBean}). The server averages them over its resource window.
 */
public record Resources(int cpuPercent, long memBytes) {
    public Resources {
        if (cpuPercent < 0 || memBytes < 0) {
            throw new IllegalArgumentException("resources must not be negative: cpu " + cpuPercent + "%, mem " + memBytes + " bytes");
        }
    }

    /** Samples this JVM now. A CPU load the platform cannot tell (negative) counts as 0. */
    public static Resources sample() {
        double load = -1;
        if (ManagementFactory.getOperatingSystemMXBean() instanceof com.sun.management.OperatingSystemMXBean os) {
            load = os.getProcessCpuLoad();
        }
        int cpu = load < 0 || Double.isNaN(load) ? 0 : (int) Math.min(100, Math.round(load * 100));
        MemoryMXBean mem = ManagementFactory.getMemoryMXBean();
        long bytes = Math.max(0, mem.getHeapMemoryUsage().getUsed()) + Math.max(0, mem.getNonHeapMemoryUsage().getUsed());
        return new Resources(cpu, bytes);
    }

    String json() {
        return "{\"cpu_percent\":" + cpuPercent + ",\"mem_bytes\":" + memBytes + "}";
    }
}
