"""The networks (RFBSNet; others join the registry by register), their weights files and PyTorch runtime.

Needs PyTorch, except `input_grid` (the grid the networks see), which the engine reads without it.
"""
