"""Build the progtc-kernel E2B template.

    pip install "e2b>=2.12" python-dotenv
    export E2B_API_KEY=e2b_***            # or put it in e2b/.env
    python e2b/build.py                   # a wheel of this checkout, template "progtc-kernel"
    python e2b/build.py --package dist/progtc_kernel-0.2.0.dev0-py3-none-any.whl
    python e2b/build.py --package "progtc-kernel @ git+https://github.com/OWNER/REPO@REF"
    python e2b/build.py --dry-run         # print the template definition, call nothing

The template is optional: E2B's stock code-interpreter template works as it is (the host
brings progtc-kernel's kernel side into each kernel). This one saves that per kernel.

--package defaults to $PROGTC_KERNEL_PACKAGE, else a wheel built from this checkout
(progtc-kernel is on no public index); --name to $PROGTC_TEMPLATE_NAME, else
"progtc-kernel". A local wheel or sdist outside this directory is copied into
e2b/wheels/ first (the template uploads files from here).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from template import BASE_TEMPLATE, make_template  # noqa: E402

from e2b import Template, default_build_logger  # noqa: E402


def _checkout_wheel() -> str:
    """A wheel of the checkout this folder belongs to, built into e2b/wheels/."""
    wheels = HERE / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(wheels),
            str(HERE.parent),
        ],
        check=True,
    )
    newest = max(wheels.glob("progtc_kernel-*.whl"), key=lambda wheel: wheel.stat().st_mtime)
    return newest.relative_to(HERE).as_posix()


def _stage(package: str) -> str:
    """A pip requirement as is; a local file as a path relative to HERE (copied in if needed)."""
    path = Path(package).expanduser()
    if not path.is_file():
        return package
    path = path.resolve()
    if not path.is_relative_to(HERE):
        staged = HERE / "wheels" / path.name
        staged.parent.mkdir(exist_ok=True)
        shutil.copy2(path, staged)
        path = staged
    return path.relative_to(HERE).as_posix()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--name",
        default=os.environ.get("PROGTC_TEMPLATE_NAME", "progtc-kernel"),
        help="template name ('name' or 'name:tag') to create sandboxes from",
    )
    parser.add_argument(
        "--package",
        default=os.environ.get("PROGTC_KERNEL_PACKAGE"),
        help="pip requirement, or path of a progtc-kernel wheel/sdist (default: a wheel "
        "built from this checkout)",
    )
    parser.add_argument("--from-template", default=BASE_TEMPLATE, help="base E2B template")
    parser.add_argument("--cpu-count", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=2048)
    parser.add_argument(
        "--skip-cache",
        action="store_true",
        help="rebuild every layer (an unpinned requirement or a git branch is otherwise cached)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the template as JSON and exit"
    )
    args = parser.parse_args(argv)

    package = _stage(args.package) if args.package else _checkout_wheel()
    template = make_template(package, args.from_template)
    if args.dry_run:
        print(Template.to_json(template))
        return

    try:
        from dotenv import load_dotenv
    except ImportError:
        pass
    else:
        load_dotenv(HERE / ".env")
    if not os.environ.get("E2B_API_KEY"):
        parser.error("set E2B_API_KEY (environment or e2b/.env)")

    info = Template.build(
        template,
        args.name,
        cpu_count=args.cpu_count,
        memory_mb=args.memory_mb,
        skip_cache=args.skip_cache,
        on_build_logs=default_build_logger(),
    )
    print(f"Built template {info.name!r} (id {info.template_id}, build {info.build_id})")


if __name__ == "__main__":
    main()
