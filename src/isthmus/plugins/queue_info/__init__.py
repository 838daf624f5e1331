"""Queues, partitions, jobs and allocations of the edge's batch scheduler."""
