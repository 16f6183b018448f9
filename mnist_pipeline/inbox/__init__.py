"""Labelled digits users add: the inbox, its ingestion into IDX splits, and events."""
