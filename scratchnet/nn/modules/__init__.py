"""The module classes of scratchnet.nn, one file per family as in torch."""
