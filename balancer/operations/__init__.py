"""The operator's operations on running nodes: rolling restart, adding and removing nodes, traffic counts."""
