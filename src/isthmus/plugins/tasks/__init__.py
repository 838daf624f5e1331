"""High-throughput tasks (executables and Python functions) near the data: local pool, Dask, Rhapsody."""
