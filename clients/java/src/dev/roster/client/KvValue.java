package dev.roster.client;

/** A key's value and the revision at which it was read. */
public record KvValue(String key, String value, long revision) {}
