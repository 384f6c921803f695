package dev.roster.client;

/** One key and its value, from a list. */
public record KvItem(String key, String value) {}
