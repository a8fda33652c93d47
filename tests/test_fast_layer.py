"""The fast layer needs no kernel: starting one there fails, and its fake kernel
implements the seam the real ones do."""

from __future__ import annotations

import pytest

from progtc_kernel import KernelError, ToolKernel
from progtc_kernel.kernels.base import KernelLifecycle, Transport

from .fakes import FakeKernel, FakeTransport

pytestmark = pytest.mark.fast


async def test_a_fast_test_that_starts_a_kernel_fails_naming_the_fix() -> None:
    with pytest.raises(
        KernelError,
        match="starts a kernel or a server, and the fast layer needs none: drop its fast marker",
    ):
        async with ToolKernel():
            pass


async def test_the_fakes_implement_the_kernel_seam() -> None:
    # Checked twice: by mypy (structural typing) and at run time (runtime_checkable).
    transport: Transport = FakeTransport()
    lifecycle: KernelLifecycle = FakeKernel()
    assert isinstance(transport, Transport) and isinstance(lifecycle, KernelLifecycle)
