"""NoC evaluation on the engine: datasets, upstream's click simulator, metrics and the loop."""
