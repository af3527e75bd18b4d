"""Training the demo model: procedural scenes, a from-scratch trainer for `tiny`, its release."""
