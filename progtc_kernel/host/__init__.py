"""Host side: tool registry, the bridge that serves calls, and ToolKernel."""
