"""
blockmover: move stateful applications with their block-storage volumes
between the nodes of a cluster.
"""
