"""Kernel side: the IPython extension, the ``tools`` module and reply intake.

Imports nothing beyond the standard library and ipykernel, to keep kernels light.
"""
