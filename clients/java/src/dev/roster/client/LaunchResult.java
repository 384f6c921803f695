package dev.roster.client;

/** Where a launched program started: the server the cluster placed it on, and its process id. */
public record LaunchResult(long server, long process) {}
