//! Live raw-mode glue: capture, raw sending, the intercept channel, around the engine.
