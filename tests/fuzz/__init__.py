"""Fuzz tests (hypothesis); ``budget`` holds the example budget and the counter."""
