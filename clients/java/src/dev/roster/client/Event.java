package dev.roster.client;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * One change from {@code GET /v1/events}: its revision, type ({@code process_registered},
 * {@code kv_put}, {@code departed}, ...), the change as JSON, and the line {@code roster
 * watch} prints for it.
 */
public record Event(long revision, String type, JsonNode data, String text) {}
