"""Operating the service: the Temporal client, structured logs, Prometheus metrics, the
bundled server binaries and `journeyman dev`."""
