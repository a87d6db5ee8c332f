"""The demo: realistic sample tickets, the source table they load into, and a local run of the pipeline."""
