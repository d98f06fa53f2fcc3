//! The load engine: open-loop pacing, producers and consumers, run control.
