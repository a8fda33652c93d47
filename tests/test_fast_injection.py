"""What the host brings a kernel, without a kernel: the bootstrap's fingerprint and
packing, its in-memory package (in a plain interpreter), and the install hints that
name where this package came from."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from progtc_kernel._install import install_hint, missing_extra
from progtc_kernel.host.injection import kernel_side_files, load_expression
from progtc_kernel.kernel_side import bootstrap

from .conftest import ROOT

BOOTSTRAP = ROOT / "progtc_kernel/kernel_side/bootstrap.py"

pytestmark = pytest.mark.fast


# -- fingerprint and packing ---------------------------------------------------------


def test_a_fingerprint_depends_on_the_files_not_their_order() -> None:
    files = {"a.py": b"A = 1\n", "kernel/b.py": b"B = 2\n"}
    same = dict(reversed(list(files.items())))
    assert bootstrap.fingerprint(files) == bootstrap.fingerprint(same)
    assert bootstrap.fingerprint(files) != bootstrap.fingerprint({**files, "a.py": b"A = 3\n"})
    # A file's name is part of it: moving content between files changes the hash.
    assert bootstrap.fingerprint({"a.py": b"xy", "b.py": b""}) != bootstrap.fingerprint(
        {"a.py": b"x", "b.py": b"y"}
    )


def test_sources_travel_packed_as_ascii_and_come_back_whole() -> None:
    files = kernel_side_files()
    packed = bootstrap.pack_sources(files)
    assert packed.isascii() and len(packed) < sum(map(len, files.values()))
    assert bootstrap.unpack_sources(packed) == {path: text.decode() for path, text in files.items()}


def test_this_installed_checkout_has_exactly_the_hosts_kernel_side() -> None:
    # What lets a kernel of this environment load its installed copy, bringing nothing.
    files = kernel_side_files()
    assert bootstrap.installed_fingerprint(list(files)) == bootstrap.fingerprint(files)
    assert bootstrap.installed_fingerprint(["kernel/no_such_module.py"]) is None


def test_the_load_expression_runs_the_bootstrap_in_a_namespace_of_its_own() -> None:
    expression = load_expression(inject=True)
    assert "'<progtc_kernel bootstrap>'" in expression and "inject=True" in expression
    assert "inject=False" in load_expression(inject=False)
    assert ":=" not in expression  # no name bound in the user's namespace
    compile(expression, "<user expression>", "eval")  # an expression, as sent


# -- the in-memory package, in a fresh interpreter ----------------------------------

INJECT = """\
import json, sys, traceback
ns = {"__name__": "bootstrap"}
exec(open(sys.argv[1]).read(), ns)
sources = json.load(sys.stdin)
files = {path: text.encode() for path, text in sources.items()}
sys.meta_path.insert(0, ns["InjectedPackage"](sources, "9.9", ns["fingerprint"](files)))
from progtc_kernel.kernel import greet
seen = {"value": greet.hello("kernel"), "file": greet.__spec__.origin,
        "injected": greet.__injected__, "package": sys.modules["progtc_kernel"].VERSION}
try:
    greet.fail()
except ValueError:
    seen["traceback"] = traceback.format_exc()
try:
    import progtc_kernel.host
except ModuleNotFoundError as exc:
    seen["host"] = str(exc)
print(json.dumps(seen))
"""


def test_the_injected_package_imports_from_source_text_alone(tmp_path: Path) -> None:
    sources = {
        "__init__.py": "VERSION = '9.9'\n",
        "kernel/__init__.py": "",
        "kernel/greet.py": (
            "from .. import VERSION\n\n"
            "def hello(who):\n    return f'hello {who} from {VERSION}'\n\n"
            "def fail():\n    raise ValueError('from injected code')\n"
        ),
    }
    done = subprocess.run(
        [sys.executable, "-I", "-c", INJECT, str(BOOTSTRAP)],
        input=json.dumps(sources),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=True,
    )
    seen = json.loads(done.stdout)
    assert seen["value"] == "hello kernel from 9.9" and seen["package"] == "9.9"
    assert seen["file"] == "<progtc_kernel 9.9, from the host>/kernel/greet.py"
    assert seen["injected"] is True
    # Tracebacks show the injected lines, as from a file.
    assert "raise ValueError('from injected code')" in seen["traceback"]
    # A module the host did not send is not there (the installed one is not reachable).
    assert "progtc_kernel.host" in seen["host"]


LOAD = """\
import json, sys
ns = {"__name__": "bootstrap"}
exec(open(sys.argv[1]).read(), ns)
given = json.load(sys.stdin)

class Extensions:  # what IPython's extension manager is asked
    loaded = []
    def load_extension(self, name):
        self.loaded.append(name)

class IPython:
    extension_manager = Extensions()

seen = []
for digest, inject in given["loads"]:
    try:
        how = ns["load"](IPython(), version="9.9", digest=digest or given["digest"],
                         paths=given["paths"], packed=given["packed"], inject=inject)
    except ModuleNotFoundError as exc:
        how = "ModuleNotFoundError: " + str(exc)
    finders = [f for f in sys.meta_path if hasattr(f, "progtc_kernel_digest")]
    seen.append([how, len(finders), list(Extensions.loaded)])
print(json.dumps(seen))
"""


def load_in_a_plain_interpreter(
    loads: list[tuple[str | None, bool]], *flags: str
) -> list[list[object]]:
    """Run ``bootstrap.load`` once per (digest, inject) in a fresh interpreter (no
    digest: the host's own); returns (how, injected finders, extensions loaded) each."""
    files = kernel_side_files()
    given = {
        "digest": bootstrap.fingerprint(files),
        "paths": sorted(files),
        "packed": bootstrap.pack_sources(files),
        "loads": loads,
    }
    done = subprocess.run(
        [sys.executable, "-I", *flags, "-c", LOAD, str(BOOTSTRAP)],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        check=True,
    )
    seen: list[list[object]] = json.loads(done.stdout)
    return seen


def test_a_kernel_with_these_very_files_installed_loads_them_and_brings_nothing() -> None:
    assert load_in_a_plain_interpreter([(None, True)]) == [["installed", 0, ["progtc_kernel"]]]


def test_a_kernel_with_other_files_gets_the_hosts_once_and_keeps_them() -> None:
    assert load_in_a_plain_interpreter([("another release", True), ("another release", True)]) == [
        ["injected", 1, ["progtc_kernel"]],
        ["injected", 1, ["progtc_kernel"] * 2],
    ]


def test_told_not_to_bring_code_a_kernel_loads_what_it_has_installed() -> None:
    assert load_in_a_plain_interpreter([("another release", False)]) == [
        ["installed", 0, ["progtc_kernel"]]
    ]  # its protocol check then decides


def test_told_not_to_bring_code_a_kernel_without_the_package_says_so() -> None:
    (seen,) = load_in_a_plain_interpreter([("another release", False)], "-S")  # no site
    how, finders, loaded = seen
    assert str(how).startswith(
        "ModuleNotFoundError: progtc_kernel is not installed in this kernel's environment"
    )
    assert "the host was told not to bring its own (extension='installed')" in str(how)
    assert (finders, loaded) == (0, [])


# -- install hints name where this package came from -------------------------------


def a_distribution(site: Path, direct_url: dict[str, object] | None) -> Path:
    """A progtc-kernel installed into ``site`` as pip records it."""
    info = site / "progtc_kernel-9.9.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: progtc-kernel\nVersion: 9.9\n")
    if direct_url is not None:
        (info / "direct_url.json").write_text(json.dumps(direct_url))
    return site


@pytest.mark.parametrize(
    ("direct_url", "extra", "expected"),
    [
        (
            {"url": "file:///src/progtc-kernel", "dir_info": {"editable": True}},
            None,
            "-m pip install -e /src/progtc-kernel",
        ),
        (
            {"url": "file:///src/progtc-kernel", "dir_info": {"editable": True}},
            "mcp",
            "-m pip install -e '/src/progtc-kernel[mcp]'",
        ),
        (
            {"url": "file:///src/progtc-kernel", "dir_info": {}},
            None,
            "-m pip install /src/progtc-kernel",
        ),
        (
            {
                "url": "file:///wheels/my%20dir/progtc_kernel-9.9-py3-none-any.whl",
                "archive_info": {},
            },
            "server",
            "-m pip install '/wheels/my dir/progtc_kernel-9.9-py3-none-any.whl[server]'",
        ),
        (
            {"url": "https://example.org/progtc_kernel-9.9-py3-none-any.whl", "archive_info": {}},
            "mcp",
            "-m pip install 'progtc-kernel[mcp]' from the index, checkout or wheel you "
            "installed it from here (it is on no public index)",
        ),
        (
            {"url": "git+https://example.org/progtc-kernel", "vcs_info": {"vcs": "git"}},
            None,
            "-m pip install 'progtc-kernel' from the index, checkout or wheel you installed it "
            "from here (it is on no public index)",
        ),
    ],
)
def test_an_install_hint_names_where_pip_installed_this_package_from(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    direct_url: dict[str, object],
    extra: str | None,
    expected: str,
) -> None:
    monkeypatch.syspath_prepend(str(a_distribution(tmp_path, direct_url)))
    hint = install_hint(extra)
    assert hint == f"{shlex.quote(sys.executable)} {expected}"
    assert "pip install progtc-kernel" not in hint


def test_an_install_from_an_index_without_a_record_points_at_this_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(a_distribution(tmp_path, None)))
    assert install_hint() == f"{shlex.quote(sys.executable)} -m pip install -e {ROOT}"


def test_a_hint_for_the_kernel_names_the_kernels_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(
        str(a_distribution(tmp_path, {"url": "file:///src/p", "dir_info": {"editable": True}}))
    )
    assert install_hint(python="/opt/k/bin/python") == "/opt/k/bin/python -m pip install -e /src/p"


def test_a_missing_extra_names_what_needs_it_and_the_pip_command() -> None:
    try:
        import no_such_dependency  # type: ignore[import-not-found]  # noqa: F401
    except ImportError as exc:
        error = missing_extra("mcp", exc, "the MCP server needs the MCP SDK")
    assert isinstance(error, ModuleNotFoundError) and error.name == "no_such_dependency"
    message = str(error)
    assert message.startswith(
        "the MCP server needs the MCP SDK (No module named "
        "'no_such_dependency'); install the 'mcp' extra: "
    )
    assert message.endswith(install_hint("mcp"))
