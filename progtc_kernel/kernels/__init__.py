"""Where kernels live: each way is a lifecycle (start, interrupt, restart, shut down)
plus a ``Transport`` (signed Jupyter messages on channels). ``ToolKernel`` knows a
kernel only through these two interfaces (``base.py``)."""
