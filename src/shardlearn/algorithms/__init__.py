"""Distributed algorithms: coordinator loops (numpy on the driver) and worker kernels.

Nothing here imports Ray: algorithms speak only to the Coordinator's verbs.
"""
