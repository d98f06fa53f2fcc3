//! Results: the latency collector (HdrHistogram), the run record and its renderers.
