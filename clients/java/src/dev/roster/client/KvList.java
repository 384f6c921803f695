package dev.roster.client;

import java.util.List;

/** Keys of a range, in order, read page by page from the first page's revision: stream events after it to follow changes. */
public record KvList(long revision, List<KvItem> items) {}
