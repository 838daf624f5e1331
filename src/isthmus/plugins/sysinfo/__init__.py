"""System information of the edge's host: CPU, memory, disks, network, GPUs, filesystems."""
