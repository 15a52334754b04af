"""The streaming pipeline over ZeroMQ: sources -> broker -> detector workers -> OOD filter -> sinks.

Every stage is its own process (`stage_main`), a pure core inside a thin ZeroMQ shell;
`protocol` is the versioned wire format, `config` the graph, `supervisor` runs a graph on
one machine (`ghostbox run`), `demo` the synthetic-world demo (`ghostbox demo`).
"""
