"""Watching a served model: how live traffic compares with what it was measured on."""
