"""Workflows across edges, hosted on the bridge: a DAG of jobs, task batches and transfers."""
