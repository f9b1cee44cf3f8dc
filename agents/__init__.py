"""
The per-node convergence agent.
"""
