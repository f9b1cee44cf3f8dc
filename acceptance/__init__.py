"""
End-to-end tests on a local cluster of namespace nodes.
"""
