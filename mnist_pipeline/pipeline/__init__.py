"""The stage table, run folders and the register stage that wire the rest together."""
