package dev.roster.client;

import java.util.List;

/** Keys of a range, in order, read at one revision: stream events after it to follow changes. */
public record KvList(long revision, List<KvItem> items) {}
