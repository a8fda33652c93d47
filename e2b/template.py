"""E2B sandbox template: E2B's code interpreter with progtc-kernel in every Python kernel.

Starts FROM E2B's ``code-interpreter-v1`` template (its Jupyter Server on port 8888, its
start and ready commands are inherited), pip-installs progtc-kernel into the Python the
kernels run (the ``python3`` kernelspec's interpreter: the system Python 3.13 in
``/usr/local`` of the ``python:3.13`` image the base template is built on) and
appends ``c.InteractiveShellApp.extensions.append("progtc_kernel")`` to
``/root/.ipython/profile_default/ipython_kernel_config.py``. The work is done by
``setup_kernel.sh``; build with ``build.py``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from e2b import Template, TemplateClass

HERE = Path(__file__).resolve().parent

BASE_TEMPLATE = "code-interpreter-v1"
"""E2B's code-interpreter template (``e2b_code_interpreter.constants.DEFAULT_TEMPLATE``)."""


# Files are copied here, used by setup_kernel.sh (run as root) and removed again.
SETUP_DIR = "/opt/progtc-kernel-setup"


def make_template(package: str, base_template: str = BASE_TEMPLATE) -> TemplateClass:
    """The template definition.

    ``package`` is what pip installs: the path, relative to this directory, of a wheel
    or sdist inside it (``build.py`` builds one from the checkout, and stages files from
    elsewhere under ``wheels/``), or a requirement pip can resolve there
    (``"progtc-kernel @ git+https://github.com/OWNER/REPO@REF"``; progtc-kernel is on no
    public index).
    """
    template = (
        Template(file_context_path=str(HERE))
        .from_template(base_template)
        .copy("setup_kernel.sh", f"{SETUP_DIR}/setup_kernel.sh")
    )

    local = (HERE / package).resolve()
    if local.is_file():
        if not local.is_relative_to(HERE):
            raise ValueError(
                f"{package}: a local wheel or sdist must be inside {HERE} (the files a "
                "template copies come from its directory); build.py --package stages it"
            )
        template = template.copy(local.relative_to(HERE).as_posix(), f"{SETUP_DIR}/{local.name}")
        requirement = f"{SETUP_DIR}/{local.name}"
    else:
        requirement = package

    # Root: the kernels' Python and /root/.ipython belong to root. The base template's
    # default user ("user", /home/user) stays the sandbox's default.
    return template.run_cmd(
        f"bash {SETUP_DIR}/setup_kernel.sh {shlex.quote(requirement)} && rm -rf {SETUP_DIR}",
        user="root",
    )
