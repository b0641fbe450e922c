"""Pure model logic (no Dagster): the network, training, checkpoints, evaluation and export."""
