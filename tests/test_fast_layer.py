"""The fast layer proves it needs no kernel: starting one there fails."""

from __future__ import annotations

import pytest

from progtc_kernel import KernelError, ToolKernel

pytestmark = pytest.mark.fast


async def test_a_fast_test_that_starts_a_kernel_fails_naming_the_fix() -> None:
    with pytest.raises(KernelError, match="is marked fast but starts a kernel or a server: "
                                        "drop its fast marker"):
        async with ToolKernel():
            pass
